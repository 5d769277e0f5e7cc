"""The @system repository: libraries installed from Debian 12 packages.

system_libraries() builds the repository from BUILD.system and, for Abseil,
the link flags Debian's own pkg-config files give (libabsl-dev ships one .pc
per Abseil library), so the -l lists follow whatever Abseil release is
installed instead of being copied by hand for one release.

The flags land in absl_linkopts.bzl inside the repository:
    ABSL_LINKOPTS = {"absl_status": ["-labsl_statusor", ...], ...}
which BUILD.system loads. Bazel re-runs the rule when PKG_CONFIG_PATH changes
or after `bazel sync --configure`/`bazel clean --expunge`; after installing a
different Abseil, run one of those.

Errors: a missing pkg-config or a missing Abseil .pc file fails the build at
once with a message naming tools/install_deps.
"""

# Our target name -> the Abseil pkg-config modules its users' headers reach.
# A target's flags are pkg-config's for all its modules (with their private
# dependencies, as the .pc files list them).
ABSL_TARGETS = {
    "absl_base": ["absl_base", "absl_throw_delegate"],
    "absl_strings": ["absl_strings", "absl_str_format", "absl_cord"],
    "absl_time": ["absl_time"],
    "absl_status": ["absl_status", "absl_statusor"],
    "absl_hash_containers": [
        "absl_flat_hash_map",
        "absl_flat_hash_set",
        "absl_btree",
    ],
}

def _pkg_config_libs(repository_ctx, pkg_config, modules):
    result = repository_ctx.execute([pkg_config, "--libs"] + modules)
    if result.return_code != 0:
        fail(("@system: pkg-config --libs {} failed ({}). Abseil's " +
              "development files (libabsl-dev) are missing: run " +
              "tools/install_deps.").format(
            " ".join(modules),
            result.stderr.strip(),
        ))
    return result.stdout.strip().split(" ")

def _system_libraries_impl(repository_ctx):
    pkg_config = repository_ctx.which("pkg-config")
    if pkg_config == None:
        fail("@system: pkg-config is not installed: run tools/install_deps.")

    lines = ["# Written by //third_party/system:system.bzl from pkg-config."]
    lines.append("ABSL_LINKOPTS = {")
    for target in sorted(ABSL_TARGETS.keys()):
        flags = _pkg_config_libs(repository_ctx, pkg_config, ABSL_TARGETS[target])
        lines.append("    \"{}\": [{}],".format(
            target,
            ", ".join(["\"{}\"".format(flag) for flag in flags if flag]),
        ))
    lines.append("}")
    repository_ctx.file("absl_linkopts.bzl", "\n".join(lines) + "\n")
    repository_ctx.template("BUILD.bazel", repository_ctx.attr.build_file)

system_libraries = repository_rule(
    implementation = _system_libraries_impl,
    attrs = {"build_file": attr.label(allow_single_file = True)},
    environ = ["PKG_CONFIG_PATH"],
    local = True,
)
