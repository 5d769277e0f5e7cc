# The library's version, written in this one place: the installed shared
# object's name and soname (libdemi.so.VERSION, libdemi.so.MAJOR), demi.pc and
# the CMake package's version all come from it (tools/install reads it too).
# MAJOR changes when the ABI does.
DEMI_VERSION = "0.1.0"
DEMI_VERSION_MAJOR = DEMI_VERSION.split(".")[0]
