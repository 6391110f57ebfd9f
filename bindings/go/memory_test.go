package olm

import (
	"runtime"
	"testing"
)

// Creating and closing 1,000 models must not grow the resident set: Close frees C memory
// at once, without waiting for Go's garbage collector.
func TestThousandModelsDoNotLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	cfg := must(ConfigFromPreset("olmo2_1M", 64))
	defer cfg.Close()
	open := liveModels.Load()
	x := must(NewTensorInt64(ids(8, 64), 1, 8))
	defer x.Close()
	cycle := func(i int) {
		m := must(NewModel(cfg, "cpu", nil))
		if i%100 == 0 { // now and then use it, so that forward state is covered too
			must(m.Forward(x, nil)).Close()
		}
		m.Close()
	}
	for i := 0; i < 50; i++ {
		cycle(i)
	}
	runtime.GC()
	before := residentBytes(t)
	for i := 0; i < 1000; i++ {
		cycle(i)
	}
	runtime.GC()
	after := residentBytes(t)
	growth := after - before
	t.Logf("resident memory: %d KiB after warm-up, %d KiB after 1000 models (growth %d KiB)",
		before>>10, after>>10, growth>>10)
	if live := liveModels.Load() - open; live != 0 {
		t.Fatalf("%d models still open", live)
	}
	if growth > 16<<20 {
		t.Fatalf("resident memory grew by %d MiB over 1000 models", growth>>20)
	}
}
