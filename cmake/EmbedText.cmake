# Writes the text of IN into OUT as a C++ raw string literal, so the FlatBuffers JSON parser
# can read the schema at run time without the schema file being installed.
file(READ "${IN}" _text)
file(WRITE "${OUT}.tmp" "// Generated from schema/olm.fbs; do not edit.\n#pragma once\nnamespace olm::schema_text {\ninline constexpr const char kOlmFbs[] = R\"OLMFBS(${_text})OLMFBS\";\n}\n")
file(RENAME "${OUT}.tmp" "${OUT}")
