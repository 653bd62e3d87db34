#!/usr/bin/env python3
"""Writes assets/favicon.ico from the shapes of assets/favicon.svg.

Browsers ask for /favicon.ico whatever a page's <link rel="icon"> says (on
JSON and error responses, in bookmarks, some only understand ICO), so the
server answers it with a real icon. Standard library only, so no image
toolkit is needed to rebuild it: the SVG is a rounded square and one
polygon, rasterised here with 8x8 supersampling into 16, 32 and 48 px PNG
entries of one ICO file. Run it again after changing favicon.svg.
"""
import struct
import zlib
from pathlib import Path

BRAND = (0x6B, 0x2B, 0xD9)
WHITE = (0xFF, 0xFF, 0xFF)
# favicon.svg: <rect width="64" height="64" rx="14"/> and this path.
RADIUS = 14.0
H = [(18, 14), (26, 14), (26, 28), (38, 28), (38, 14), (46, 14), (46, 50),
     (38, 50), (38, 36), (26, 36), (26, 50), (18, 50)]
SUB = 8


def in_rounded_square(x, y):
    cx = min(max(x, RADIUS), 64 - RADIUS)
    cy = min(max(y, RADIUS), 64 - RADIUS)
    return (x - cx) ** 2 + (y - cy) ** 2 <= RADIUS ** 2


def in_polygon(x, y, poly):
    inside = False
    for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def rgba(size):
    rows = []
    scale = 64.0 / size
    for py in range(size):
        row = bytearray()
        for px in range(size):
            cover = white = 0
            for sy in range(SUB):
                for sx in range(SUB):
                    x = (px + (sx + 0.5) / SUB) * scale
                    y = (py + (sy + 0.5) / SUB) * scale
                    if in_rounded_square(x, y):
                        cover += 1
                        white += in_polygon(x, y, H)
            n = SUB * SUB
            if cover == 0:
                row += bytes(4)
                continue
            # Colour over the covered part, alpha for the edge.
            w = white / cover
            rgb = [round(b * (1 - w) + f * w) for b, f in zip(BRAND, WHITE)]
            row += bytes(rgb + [round(255 * cover / n)])
        rows.append(bytes(row))
    return rows


def png(size):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + r for r in rgba(size))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def ico(sizes):
    images = [png(s) for s in sizes]
    out = struct.pack("<HHH", 0, 1, len(images))
    offset = 6 + 16 * len(images)
    for size, data in zip(sizes, images):
        out += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32,
                           len(data), offset)
        offset += len(data)
    return out + b"".join(images)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "assets" / "favicon.ico"
    target.write_bytes(ico([16, 32, 48]))
    print(f"{target}: {target.stat().st_size} bytes")
