#!/usr/bin/env python3
"""Prints the layout of every public struct in include/olm.h: one line per field with its
offset and size, and the struct's size, by compiling and running a C probe.

libabigail suppresses both appended and reordered fields under one rule, so check_abi.sh
uses this to tell them apart: every baseline line must still hold (appended fields only
add lines).
"""
import os
import re
import subprocess
import sys
import tempfile

header = sys.argv[1]
text = re.sub(r"/\*.*?\*/", "", open(header).read(), flags=re.S)
structs = re.findall(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S)
lines = []
for tag, body, name in structs:
    for field in body.split(";"):
        field = " ".join(field.split())
        if not field:
            continue
        m = re.search(r"(\w+)\s*\)\s*\(.*\)$", field)  # function pointer member
        member = m.group(1) if m else re.findall(r"\w+", field)[-1]
        lines.append(f'printf("{name}.{member} offset=%zu size=%zu\\n", offsetof({name}, {member}), '
                     f'sizeof((({name}*)0)->{member}));')
    lines.append(f'printf("{name} size=%zu\\n", sizeof({name}));')
with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "probe.c")
    with open(src, "w") as f:
        f.write(f'#include <stddef.h>\n#include <stdio.h>\n#include "{os.path.basename(header)}"\n'
                "int main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n")
    exe = os.path.join(tmp, "probe")
    subprocess.run(["cc", "-std=c99", "-I", os.path.dirname(os.path.abspath(header)), src, "-o", exe], check=True)
    sys.stdout.write(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)
