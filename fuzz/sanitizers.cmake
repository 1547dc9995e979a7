# Compiler flags for the fuzz build (METAPS_FUZZ=ON), included by the top-level CMakeLists.txt
# BEFORE any library is declared, so that everything compiled in this build directory carries
# AddressSanitizer, UndefinedBehaviorSanitizer and libFuzzer's coverage instrumentation
# (-fsanitize=fuzzer-no-link). The fuzz targets themselves add -fsanitize=fuzzer (fuzz/CMakeLists.txt).
#
# Clang only. The normal build (GCC) never reads this file. System libraries (capnp, RocksDB,
# spdlog, zmq) stay GCC-built and uninstrumented; clang with libstdc++ links against them fine.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "METAPS_FUZZ=ON needs clang: CC=clang CXX=clang++ cmake -S . -B build-fuzz -DMETAPS_FUZZ=ON")
endif()
set(METAPS_SANITIZE -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
add_compile_options(${METAPS_SANITIZE} -fsanitize=fuzzer-no-link)
add_link_options(-fsanitize=address,undefined)
# Debian's toml++ is a GCC-built shared library; in this build, compile it header-only into
# common/config.cc instead so that the TOML parser is instrumented and fuzzed too.
if(TARGET tomlplusplus::tomlplusplus)
  set_property(TARGET tomlplusplus::tomlplusplus PROPERTY INTERFACE_COMPILE_OPTIONS "")
  set_property(TARGET tomlplusplus::tomlplusplus PROPERTY INTERFACE_COMPILE_DEFINITIONS TOML_HEADER_ONLY=1)
endif()
