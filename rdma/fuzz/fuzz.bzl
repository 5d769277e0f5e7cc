"""fuzz_corpus_test: a fuzz target run over its seed corpus."""

def fuzz_corpus_test(name, deps):
    """NAME_fuzzer.cc with fuzz_driver's main(), run on corpus/NAME/.

    Args:
      name: the target: its source is NAME_fuzzer.cc, its corpus corpus/NAME.
      deps: what the target's source needs besides fuzz_check.
    """
    native.cc_test(
        name = name + "_corpus_test",
        size = "small",
        srcs = [name + "_fuzzer.cc"],
        args = ["rdma/fuzz/corpus/" + name],
        data = native.glob(["corpus/" + name + "/*"]),
        deps = deps + [
            ":fuzz_check",
            ":fuzz_driver",
        ],
    )
