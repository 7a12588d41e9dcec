"""What a montage PNG shows, as JSON, for tests/e2e/test_cohort_pipeline.cpp (MontageDrawsACase).

    /usr/bin/python3 png_stats.py FILE.png N_PANELS

Decodes the PNG with the standard library only (8-bit RGB, any of the five row filters) and prints
{"width", "height", "panels": [{"grey_std", "red", "green", "yellow"}, ...]}: for each of the
N_PANELS equal-width columns, the spread of its grey pixels and how many pixels have the label
colours (NCR red, oedema green, ET yellow).
"""
import json
import struct
import sys
import zlib


def decode(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit("%s: not a PNG" % path)
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]:
            raise SystemExit("%s: bad CRC in %s" % (path, kind))
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    width, height, depth, colour = ihdr[:4]
    if (depth, colour) != (8, 2):
        raise SystemExit("%s: not 8-bit RGB" % path)
    raw, stride = zlib.decompress(idat), 3 * width
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b, c = prev[i], prev[i - 3] if i >= 3 else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, rows


def main():
    width, height, rows = decode(sys.argv[1])
    n_panels = int(sys.argv[2])
    panels = []
    for k in range(n_panels):
        x0, x1 = k * width // n_panels, (k + 1) * width // n_panels
        greys, red, green, yellow = [], 0, 0, 0
        for row in rows:
            for x in range(x0, x1):
                r, g, b = row[3 * x:3 * x + 3]
                if r == g == b:
                    greys.append(r)
                elif r > b + 40 and g > b + 40 and abs(r - g) < 60:  # the overlay is blended
                    yellow += 1                                     # with the grey beneath
                elif r > g + 40 and r > b + 40:
                    red += 1
                elif g > r + 40 and g > b + 40:
                    green += 1
        mean = sum(greys) / max(1, len(greys))
        std = (sum((v - mean) ** 2 for v in greys) / max(1, len(greys))) ** 0.5
        panels.append({"grey_std": std, "red": red, "green": green, "yellow": yellow})
    print(json.dumps({"width": width, "height": height, "panels": panels}))


if __name__ == "__main__":
    main()
