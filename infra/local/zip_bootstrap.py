"""Writes a Lambda zip holding one executable `bootstrap`, byte for byte the same for the
same binary: a fixed entry time, fixed permissions (0755, which Lambda needs to run it) and
a fixed compression level, where a packager would stamp the build's time.

Usage: python3 zip_bootstrap.py BINARY OUT.zip
"""

import sys
import zipfile

# The earliest time a zip entry can carry; any fixed value would do.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: zip_bootstrap.py BINARY OUT.zip", file=sys.stderr)
        return 2
    binary, out = sys.argv[1], sys.argv[2]
    entry = zipfile.ZipInfo("bootstrap", date_time=FIXED_TIME)
    entry.external_attr = (0o100755 & 0xFFFF) << 16
    entry.create_system = 3  # Unix, so the permission bits are read
    entry.compress_type = zipfile.ZIP_DEFLATED
    with open(binary, "rb") as f:
        data = f.read()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
