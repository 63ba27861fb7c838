"""Compile a regular expression with the system's PCRE2, the library HAProxy itself uses.

Python's `re` and PCRE2 disagree at the edges (`\\N{name}` and `\\u0041` are Python only;
`(?a)` depends on the PCRE2 release), so the API asks the very library that will
compile the regex inside HAProxy. A regex refused here is a 400 instead of an apply
that fails on every host. Bindings to any other PCRE2 build (a wheel bundles its own
release) would not agree with the system's, hence these few ctypes lines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

_LIB_NAMES = ("libpcre2-8.so.0", "libpcre2-8.so")


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    for name in (*_LIB_NAMES, ctypes.util.find_library("pcre2-8")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcre2_compile_8.restype = ctypes.c_void_p
        lib.pcre2_compile_8.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint32,
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.c_void_p,
        ]
        lib.pcre2_code_free_8.argtypes = [ctypes.c_void_p]
        lib.pcre2_get_error_message_8.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        return lib
    return None


def available() -> bool:
    return _library() is not None


def compile_error(pattern: str) -> str | None:
    """None when PCRE2 compiles `pattern`, else its error message with the position."""
    lib = _library()
    if lib is None:
        raise RuntimeError("the system PCRE2 library (libpcre2-8) is not installed")
    raw = pattern.encode()
    code, offset = ctypes.c_int(0), ctypes.c_size_t(0)
    compiled = lib.pcre2_compile_8(raw, len(raw), 0, ctypes.byref(code), ctypes.byref(offset), None)
    if compiled:
        lib.pcre2_code_free_8(compiled)
        return None
    buf = ctypes.create_string_buffer(256)
    lib.pcre2_get_error_message_8(code.value, buf, len(buf))
    return f"{buf.value.decode(errors='replace')} (at offset {offset.value})"
