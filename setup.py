"""Builds the one C piece of skillfs (see skillfs/_noflush.c); everything else is in
pyproject.toml. The extension is optional: without it the mount works, with one more round
trip per close()."""

import subprocess

from setuptools import Extension, setup


def fuse3_cflags() -> list[str]:
    try:
        out = subprocess.run(["pkg-config", "--cflags", "fuse3"], capture_output=True,
                             text=True, check=True).stdout
        return out.split()
    except (OSError, subprocess.CalledProcessError):
        return ["-I/usr/include/fuse3"]


setup(ext_modules=[Extension("skillfs._noflush", ["skillfs/_noflush.c"],
                             extra_compile_args=fuse3_cflags(), libraries=["fuse3", "dl"],
                             optional=True)])
