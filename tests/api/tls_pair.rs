//! The serving certificate pair as the HTTPS listener takes it: what is
//! accepted, what is refused and why, and that a refused reload keeps the
//! pair being served. Certificates come from a throw-away CA made with
//! `openssl`.

use huntaze::{CertError, CertPaths, CertResolver};

use crate::support::tls::{self, Leaf, TestCa};

fn now() -> i64 {
    huntaze::now_ms() / 1000
}

fn paths(pair: &tls::Pair) -> CertPaths {
    CertPaths {
        cert: pair.cert.clone(),
        key: pair.key.clone(),
    }
}

#[test]
fn a_good_pair_loads_with_its_validity_and_rsa_and_ec_keys_both_serve() {
    if !tls::available("a_good_pair_loads_with_its_validity_and_rsa_and_ec_keys_both_serve") {
        return;
    }
    let mut ca = TestCa::new("huntaze test CA");
    for ec in [true, false] {
        let pair = ca.issue(&Leaf {
            ec,
            days: 30,
            ..Leaf::default()
        });
        let resolver = CertResolver::load(paths(&pair), now()).expect("good pair loads");
        let cert = resolver.current();
        assert!(cert.subject.contains("huntaze-test"), "{}", cert.subject);
        assert!((29..=30).contains(&cert.days_to_expiry(now())), "ec={ec}");
        assert_eq!(cert.key.cert.len(), 2, "leaf and CA: the chain is kept");
    }
}

#[test]
fn mismatched_garbage_missing_and_expired_pairs_are_refused_and_a_reload_keeps_the_old_one() {
    if !tls::available("mismatched_garbage_missing_and_expired_pairs_are_refused") {
        return;
    }
    let mut ca = TestCa::new("huntaze test CA");
    let good = ca.issue(&Leaf::default());
    let other = ca.issue(&Leaf::default());
    let expired = ca.issue(&Leaf {
        days: -1,
        ..Leaf::default()
    });
    let garbage = ca.dir.path().join("garbage.pem");
    std::fs::write(&garbage, b"not a certificate\n").unwrap();

    let mismatched = CertPaths {
        cert: good.cert.clone(),
        key: other.key.clone(),
    };
    assert!(matches!(
        CertResolver::load(mismatched, now()),
        Err(CertError::Mismatch)
    ));
    assert!(matches!(
        CertResolver::load(paths(&expired), now()),
        Err(CertError::Expired(_))
    ));
    assert!(matches!(
        CertResolver::load(
            CertPaths {
                cert: garbage.clone(),
                key: good.key.clone()
            },
            now()
        ),
        Err(CertError::NoCertificate(_))
    ));
    assert!(matches!(
        CertResolver::load(
            CertPaths {
                cert: good.cert.clone(),
                key: garbage.clone()
            },
            now()
        ),
        Err(CertError::NoKey(_))
    ));
    let missing = CertPaths {
        cert: ca.dir.path().join("absent.pem"),
        key: good.key.clone(),
    };
    let err = CertResolver::load(missing, now()).unwrap_err();
    assert!(
        matches!(err, CertError::Read { .. }) && err.to_string().contains("absent.pem"),
        "{err}"
    );

    // A reload that meets a bad pair keeps serving the good one.
    let served = ca.dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let live = CertPaths {
        cert: served.join("cert.pem"),
        key: served.join("key.pem"),
    };
    std::fs::copy(&good.cert, &live.cert).unwrap();
    std::fs::copy(&good.key, &live.key).unwrap();
    let resolver = CertResolver::load(live.clone(), now()).unwrap();
    let before = resolver.current().key.cert[0].clone();
    std::fs::copy(&other.key, &live.key).unwrap();
    assert!(matches!(resolver.reload(now()), Err(CertError::Mismatch)));
    assert_eq!(resolver.current().key.cert[0], before, "old pair kept");
    std::fs::copy(&other.cert, &live.cert).unwrap();
    resolver.reload(now()).expect("the matching new pair loads");
    assert_ne!(resolver.current().key.cert[0], before, "new pair served");
}

#[test]
fn a_passphrase_protected_key_and_a_chain_in_the_wrong_order_are_named_as_such() {
    if !tls::available("a_passphrase_protected_key_and_a_chain_in_the_wrong_order") {
        return;
    }
    let mut ca = TestCa::new("huntaze test CA");
    let good = ca.issue(&Leaf::default());
    let dir = ca.dir.path();
    let encrypted = dir.join("encrypted.key");
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:secret", "-in"])
        .arg(&good.key)
        .arg("-out")
        .arg(&encrypted)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = CertResolver::load(
        CertPaths {
            cert: good.cert.clone(),
            key: encrypted,
        },
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, CertError::EncryptedKey(_)), "{err}");
    assert!(err.to_string().contains("passphrase"), "{err}");

    // The CA first, then the server's certificate.
    let pem = std::fs::read_to_string(&good.cert).unwrap();
    let end = "-----END CERTIFICATE-----\n";
    let split = pem.find(end).unwrap() + end.len();
    let reversed = dir.join("reversed.pem");
    std::fs::write(&reversed, format!("{}{}", &pem[split..], &pem[..split])).unwrap();
    let err = CertResolver::load(
        CertPaths {
            cert: reversed,
            key: good.key.clone(),
        },
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, CertError::Mismatch), "{err}");
    assert!(err.to_string().contains("must come first"), "{err}");
}
