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
// Every object (Config, Model, Tensor, LossResult, TrainConfig, Trainer, Dataset, Batch,
// Dist, Tokenizer) is an io.Closer: Close releases its C memory, GPU memory included, immediately. It
// may be called more than once and on nil and always returns nil (libolm's release
// functions cannot fail). A finalizer only backs Close up: the garbage collector does not
// see C memory, so call Close (usually with defer). Using a closed object returns an *Error
// with ErrInvalidArgument rather than crashing. Objects that depend on others keep them
// alive inside libolm (a Trainer its Model and Dist), so they may be closed in any order. C
// never keeps a Go pointer: inputs are copied by the library during the call.
//
// # Cancellation
//
// The long calls have context variants: Trainer.FitContext and Model.GenerateContext stop
// at the next optimizer step or token once the context is done (through the step and token
// callbacks libolm offers, which stop the C call cleanly) and return ctx.Err().
// Trainer.EvaluateContext can only check the context before it starts: libolm's evaluation
// takes no callback. The plain Fit, Generate and Evaluate use context.Background().
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
// libolm lets a handle move between threads but not be used by two threads at once, and a
// cgo call runs on whichever thread its goroutine happens to be on, so for Go the rule is:
// an object must not be used from two goroutines at the same time (Close included); use a
// sync.Mutex to share one. Different objects may be used concurrently, except that some
// count as one object:
//
//   - A Model and every Trainer made for it are one object. The trainer updates the model's
//     weights in place during Step, StepDocuments, Fit, Evaluate and LoadCheckpoint, so do
//     not call the model (Forward, Loss, Generate, LoadSafetensors, SaveSafetensors, ...)
//     from one goroutine while its trainer works in another; guard both with one mutex.
//   - A Dist and the Trainer attached to it with SetDist are one object: the trainer issues
//     collectives on the group during steps, fits, evaluations and checkpoints, so do not
//     call Barrier, AllReduceSum or Shutdown meanwhile.
//   - Tensors and datasets passed to a call are used only during it, but must not be
//     modified or closed concurrently with it.
//   - Callbacks (OnStep, OnLog, OnToken) run on the calling goroutine during the call; they
//     must not call back into the model or trainer that is running them.
//
// Datasets are immutable and documented thread-safe by libolm: one Dataset may be read
// (Size, Batch, training and evaluation data) by many goroutines at once; so may one
// Tokenizer (every method but Close) be used by many goroutines at once. Configs and
// TrainConfigs are immutable too but follow the general rule.
package olm
