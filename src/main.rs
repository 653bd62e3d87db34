//! `huntaze`: the binary is only argument parsing; everything lives in the library.

fn main() -> std::process::ExitCode {
    huntaze::run()
}
