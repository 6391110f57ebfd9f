// Package olm is the Go binding of libolm: transformer language models (OLMo-2, Llama) built,
// run, trained, checkpointed and sampled through libolm's C ABI.
//
// Linking: the package uses `#cgo pkg-config: olm`. With an installed olm, point
// PKG_CONFIG_PATH at <prefix>/lib/pkgconfig; with a build tree, at the build directory (it
// holds olm-uninstalled.pc). Without pkg-config, set
//
//	CGO_CFLAGS="-I<prefix>/include" CGO_LDFLAGS="-L<prefix>/lib -Wl,-rpath,<prefix>/lib -lolm"
//
// and build with PKG_CONFIG=true.
//
// Every object has a Close method that releases its C memory (GPU memory included)
// immediately and may be called more than once; a finalizer only backs it up. An object
// must not be used from two goroutines at once; different objects may.
package olm
