/*
 * Lets the mount tell the kernel "no FLUSH needed" for files opened read-only.
 *
 * Every close() of a FUSE file costs a FLUSH round trip into Python unless the open reply
 * carries FOPEN_NOFLUSH. libfuse has the flag (fuse_file_info.noflush) but pyfuse3 does not
 * expose it, so this library wraps libfuse's fuse_reply_open: a file handle with bit 62 set
 * is sent with noflush and the bit cleared. It must be loaded with RTLD_GLOBAL before
 * pyfuse3 is imported so that pyfuse3's call resolves here (skillfs/noflush.py does that).
 * Writers never get the bit: their flush commits the file and reports errors to close().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define FUSE_USE_VERSION 35
#include <dlfcn.h>
#include <fuse_lowlevel.h>
#include <stdint.h>

#define NOFLUSH_BIT (UINT64_C(1) << 62)

typedef int (*reply_open_fn)(fuse_req_t, const struct fuse_file_info *);
static reply_open_fn real_reply_open;
static unsigned long long noflush_replies;

int fuse_reply_open(fuse_req_t req, const struct fuse_file_info *fi)
{
    if (!real_reply_open) {
        void *lib = dlopen("libfuse3.so.3", RTLD_NOW | RTLD_LOCAL);
        if (lib)
            real_reply_open = (reply_open_fn)dlsym(lib, "fuse_reply_open");
        if (!real_reply_open)
            return fuse_reply_err(req, EIO);
    }
    if (fi->fh & NOFLUSH_BIT) {
        struct fuse_file_info copy = *fi;
        copy.fh &= ~NOFLUSH_BIT;
        copy.noflush = 1;
        __atomic_add_fetch(&noflush_replies, 1, __ATOMIC_RELAXED);
        return real_reply_open(req, &copy);
    }
    return real_reply_open(req, fi);
}

static PyObject *replies(PyObject *self, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&noflush_replies, __ATOMIC_RELAXED));
}

static PyMethodDef methods[] = {
    {"replies", replies, METH_NOARGS, "Open replies sent with noflush so far."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_noflush", NULL, -1, methods};

PyMODINIT_FUNC PyInit__noflush(void)
{
    return PyModule_Create(&module);
}
