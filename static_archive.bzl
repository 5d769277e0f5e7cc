"""static_archive: one archive of a C/C++ target's own objects.

A user who links statically wants one libdemi.a, not the forty per-library
archives Bazel makes. static_archive(name = "libdemi.a", deps = [...])
merges the static (PIC when there is one) archives of every library the deps
link, from this workspace only, with `ar -M`. Libraries from other
repositories (@system: Debian's rdma-core and Abseil) are not copied in: the
user links them (tools/install's demi.pc lists them in Libs.private).
"""

def _static_archive_impl(ctx):
    archives = []
    for dep in ctx.attr.deps:
        for linker_input in dep[CcInfo].linking_context.linker_inputs.to_list():
            if linker_input.owner.workspace_name != "":
                continue  # another repository's library: linked, not copied
            for library in linker_input.libraries:
                archive = library.pic_static_library or library.static_library
                if archive != None and archive not in archives:
                    archives.append(archive)
    if not archives:
        fail("static_archive: no archives in %s" % ctx.attr.deps)
    out = ctx.actions.declare_file(ctx.attr.name)
    script = "".join(
        ["CREATE %s\n" % out.path] +
        ["ADDLIB %s\n" % archive.path for archive in archives] +
        ["SAVE\n", "END\n"],
    )
    ctx.actions.run_shell(
        inputs = archives,
        outputs = [out],
        command = "printf '%s' \"$1\" | ar -M && ranlib \"$2\"",
        arguments = [script, out.path],
        mnemonic = "StaticArchive",
        progress_message = "Merging %d archives into %s" % (len(archives), out.short_path),
    )
    return [DefaultInfo(files = depset([out]))]

static_archive = rule(
    implementation = _static_archive_impl,
    attrs = {"deps": attr.label_list(providers = [CcInfo])},
)
