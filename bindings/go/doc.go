// Package olm is the Go binding of libolm: transformer language models (OLMo-2, Llama) built,
// run, trained, checkpointed and sampled through libolm's C ABI (include/olm.h).
//
//	cfg, err := olm.ConfigFromPreset("olmo2_1M", 256)
//	if err != nil { ... }
//	defer cfg.Close()
//	model, err := olm.NewModel(cfg, "cpu", nil)
//	if err != nil { ... }
//	defer model.Close()
//	ids, err := olm.NewTensorInt64([]int64{1, 2, 3}, 1, 3)
//	...
//	logits, err := model.Forward(ids, nil) // (1, 3, 256) float32
//
// # Linking
//
// The package uses `#cgo pkg-config: olm`. With an installed olm, point PKG_CONFIG_PATH at
// <prefix>/lib/pkgconfig; with a build tree, at the build directory (it holds
// olm-uninstalled.pc, which pkg-config prefers). Both .pc files put an rpath in the link
// line, so programs and test binaries find libolm.so without LD_LIBRARY_PATH.
//
// Without pkg-config, make the pkg-config step a no-op and pass the flags yourself:
//
//	PKG_CONFIG=true \
//	CGO_CFLAGS="-I<prefix>/include" \
//	CGO_LDFLAGS="-L<prefix>/lib -Wl,-rpath,<prefix>/lib -lolm" go build
//
// (for a build tree: -I<repo>/include and -L<repo>/build -Wl,-rpath,<repo>/build).
//
// # Resources
//
// Every object (Config, Model, Tensor, LossResult, TrainConfig, Trainer, Dataset, Batch) has
// a Close method that releases its C memory, GPU memory included, immediately; it may be
// called more than once and on nil. A finalizer only backs Close up: the garbage collector
// does not see C memory, so call Close (usually with defer). Using a closed object returns
// an *Error with ErrInvalidArgument rather than crashing. C never keeps a Go pointer: inputs
// are copied by the library during the call.
//
// # Errors
//
// Failures are *Error values carrying a Code (the OLM_ERR_* values) and the library's message,
// which names the offending argument or config field. Inspect them with errors.As, or match a
// code with errors.Is(err, &olm.Error{Code: olm.ErrParse}).
//
// # Options
//
// Option structs (ModelOptions, ForwardOptions, LossOptions, GenerateOptions, ...) are plain
// Go structs whose zero value is not necessarily the library's default (a zero
// LossOptions.LossDivFactor is an error). Start from DefaultModelOptions, DefaultLossOptions
// and so on, which read the defaults from the C *_options_init functions, or pass nil.
//
// # Threads
//
// An object must not be used from two goroutines at once; different objects may be used
// concurrently.
package olm
