{
  "targets": [
    {
      "target_name": "moecat_native",
      "sources": ["moecat_native.c", "gemm.c", "gemm_x86.c", "pool.c", "decode.c", "sparse.c", "experts.c"],
      "libraries": ["-lm", "-lpthread"],
      "cflags": ["-O3", "-std=c11", "-fno-fast-math", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wno-unused-function", "-Werror=implicit-function-declaration"],
      "cflags_cc": ["-O3"],
      "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-std=c11", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off", "-Werror=implicit-function-declaration"] }
    }
  ]
}
