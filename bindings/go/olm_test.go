package olm

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

const tinyJSON = `{"d_model": 32, "vocab_size": 64, "n_layers": 2,
 "block": {"name": "reordered_norm",
   "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000}, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
   "feed_forward": {"hidden_size": 96, "bias": false},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}}`

// must unwraps a (value, error) pair; an error fails the test through a panic, which the
// testing package reports with the failing line.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func wantCode(t *testing.T, err error, code Code, substr string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *olm.Error with code %v, got %v", code, err)
	}
	if e.Code != code || !strings.Contains(e.Message, substr) {
		t.Fatalf("want code %v containing %q, got %v: %q", code, substr, e.Code, e.Message)
	}
}

func ids(n, modulo int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = (int64(i)*7 + 3) % modulo
	}
	return out
}

func TestVersionAndDevices(t *testing.T) {
	if Version() != "0.1.0" {
		t.Fatalf("version %q", Version())
	}
	if CudaDeviceCount() < 0 {
		t.Fatal("negative device count")
	}
}

func TestConfigs(t *testing.T) {
	cfg := must(ConfigFromPreset("olmo2_30M", 16384))
	defer cfg.Close()
	total, nonEmb, err := cfg.NumParams()
	if err != nil || total != 11800832 || nonEmb != 7606528 {
		t.Fatalf("num params %d %d %v (OLMo-core: 11800832 7606528)", total, nonEmb, err)
	}
	flops := must(cfg.NumFlopsPerToken(256))
	if flops <= 6*nonEmb {
		t.Fatalf("flops %d", flops)
	}
	_, err = cfg.NumFlopsPerToken(0)
	wantCode(t, err, ErrInvalidArgument, "seq_len")

	text := must(cfg.JSON())
	again := must(ConfigFromJSON(text))
	defer again.Close()
	if must(again.JSON()) != text {
		t.Fatal("JSON round trip changed the text")
	}
	fb := must(cfg.FlatBuffer())
	fromFB := must(ConfigFromFlatBuffer(fb))
	defer fromFB.Close()
	if string(must(fromFB.FlatBuffer())) != string(fb) {
		t.Fatal("FlatBuffer round trip changed the bytes")
	}

	_, err = ConfigFromPreset("olmo9_1T", 100)
	wantCode(t, err, ErrInvalidArgument, "olmo2_30M")
	_, err = ConfigFromJSON(`{"d_model": 8,`)
	wantCode(t, err, ErrParse, "config JSON")
	_, err = ConfigFromJSON(strings.Replace(tinyJSON, `"n_layers": 2`, `"n_layers": 2, "bogus": 1`, 1))
	wantCode(t, err, ErrParse, "bogus")
	_, err = ConfigFromJSON(strings.Replace(tinyJSON, `"d_model": 32`, `"d_model": 30`, 1))
	wantCode(t, err, ErrInvalidConfig, "d_model")
	_, err = ConfigFromFlatBuffer([]byte("not a flatbuffer at all"))
	wantCode(t, err, ErrParse, "FlatBuffer")
	_, err = ConfigFromFlatBuffer(nil)
	wantCode(t, err, ErrParse, "FlatBuffer")
	cfg.Close()
	cfg.Close() // idempotent
}

func TestTensors(t *testing.T) {
	a := must(NewTensorInt64([]int64{1, 2, 3, 4, 5, 6}, 2, 3))
	defer a.Close()
	if d := must(a.Dtype()); d != Int64 {
		t.Fatalf("dtype %v", d)
	}
	if s := must(a.Shape()); len(s) != 2 || s[0] != 2 || s[1] != 3 {
		t.Fatalf("shape %v", s)
	}
	if v := must(a.Int64s()); v[5] != 6 {
		t.Fatalf("values %v", v)
	}
	f := must(NewTensorFloat32([]float32{1.5, -2}, 2))
	defer f.Close()
	if v := must(f.Float32s()); v[0] != 1.5 || v[1] != -2 {
		t.Fatalf("values %v", v)
	}
	i32 := must(NewTensorInt32([]int32{7}, 1))
	defer i32.Close()
	if v := must(i32.Int32s()); v[0] != 7 {
		t.Fatalf("values %v", v)
	}
	_, err := f.Int64s()
	wantCode(t, err, ErrInvalidArgument, "dtype")
	_, err = NewTensorInt64([]int64{1, 2, 3}, 2, 2)
	wantCode(t, err, ErrInvalidArgument, "data_size")
	_, err = NewTensorInt64([]int64{}, -1)
	wantCode(t, err, ErrInvalidArgument, "negative")
	a.Close()
	a.Close()
}

func TestModelForwardLossAndWeights(t *testing.T) {
	cfg := must(ConfigFromJSON(tinyJSON))
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	x := must(NewTensorInt64(ids(2*8, 64), 2, 8))
	defer x.Close()
	logits := must(m.Forward(x, 0))
	defer logits.Close()
	if s := must(logits.Shape()); s[0] != 2 || s[1] != 8 || s[2] != 64 {
		t.Fatalf("logits shape %v", s)
	}
	values := must(logits.Float32s())
	for _, v := range values {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite logit")
		}
	}
	last := must(m.Forward(x, 3))
	defer last.Close()
	if s := must(last.Shape()); s[1] != 3 {
		t.Fatalf("logits_to_keep shape %v", s)
	}

	// Labels: one target per row kept, the rest ignored; mean equals the mean of 'none'.
	lab := ids(2*8, 64)
	for i := range lab {
		if i%8 != 2 {
			lab[i] = -100
		}
	}
	labels := must(NewTensorInt64(lab, 2, 8))
	defer labels.Close()
	opts := DefaultLossOptions()
	opts.ZLossMultiplier = 1e-4
	mean := must(m.Loss(x, labels, &opts))
	defer mean.Close()
	opts.Reduction = None
	none := must(m.Loss(x, labels, &opts))
	defer none.Close()
	per := must(none.CELoss.Float32s())
	want := (float64(per[2]) + float64(per[10])) / 2
	if math.Abs(mean.CELossValue-want) > 1e-5 {
		t.Fatalf("mean %v vs %v", mean.CELossValue, want)
	}
	if mean.ZLoss == nil || mean.ZLossValue <= 0 || math.Abs(mean.LossValue-mean.CELossValue-mean.ZLossValue) > 1e-6 {
		t.Fatalf("z-loss %v loss %v ce %v", mean.ZLossValue, mean.LossValue, mean.CELossValue)
	}
	plain := must(m.Loss(x, labels, nil))
	defer plain.Close()
	if plain.ZLoss != nil || plain.Logits != nil {
		t.Fatal("no z-loss or logits unless asked")
	}

	bad := must(NewTensorInt64([]int64{1, 2, 64, 3}, 1, 4))
	defer bad.Close()
	_, err := m.Forward(bad, 0)
	wantCode(t, err, ErrInvalidArgument, "input_ids")
	flat := must(NewTensorInt64([]int64{1, 2}, 2))
	defer flat.Close()
	_, err = m.Forward(flat, 0)
	wantCode(t, err, ErrInvalidArgument, "shape")
	fl := must(NewTensorFloat32([]float32{1, 2}, 1, 2))
	defer fl.Close()
	_, err = m.Forward(fl, 0)
	wantCode(t, err, ErrInvalidArgument, "dtype")

	params := must(m.Parameters())
	var sum int64
	for _, p := range params {
		n := int64(1)
		for _, d := range p.Shape {
			n *= d
		}
		sum += n
	}
	if params[0].Name != "embeddings.weight" || sum != must(m.NumParams()) {
		t.Fatalf("parameters %v sum %d", params[0], sum)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	if err := m.SaveSafetensors(path); err != nil {
		t.Fatal(err)
	}
	opts2 := DefaultModelOptions()
	opts2.InitWeights = false
	m2 := must(NewModel(cfg, "cpu", &opts2))
	defer m2.Close()
	if err := m2.LoadSafetensors(path); err != nil {
		t.Fatal(err)
	}
	again := must(must(m2.Forward(x, 0)).Float32s())
	for i := range values {
		if values[i] != again[i] {
			t.Fatal("a save/load round trip must reproduce the logits exactly")
		}
	}
	wantCode(t, m2.LoadSafetensors(filepath.Join(dir, "missing.safetensors")), ErrIO, "missing.safetensors")
	_, err = NewModel(cfg, "gpu", nil)
	wantCode(t, err, ErrInvalidArgument, "device")
	if CudaDeviceCount() == 0 {
		_, err = NewModel(cfg, "cuda", nil)
		wantCode(t, err, ErrDeviceUnavailable, "CUDA")
	}
}

func TestGenerate(t *testing.T) {
	cfg := must(ConfigFromJSON(tinyJSON))
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	prompt := must(NewTensorInt64([]int64{1, 2, 3}, 3))
	defer prompt.Close()
	o := DefaultGenerateOptions()
	o.MaxNewTokens = 10
	o.Temperature = 0
	var streamed []int64
	o.OnToken = func(tok int64) bool { streamed = append(streamed, tok); return true }
	out := must(m.Generate(prompt, &o))
	if len(out) != 10 || len(streamed) != 10 || out[9] != streamed[9] {
		t.Fatalf("generated %v streamed %v", out, streamed)
	}
	o.OnToken = func(tok int64) bool { return false }
	if stopped := must(m.Generate(prompt, &o)); len(stopped) != 1 {
		t.Fatalf("the callback stops generation: %v", stopped)
	}
	o.OnToken = nil
	o.StopTokens = []int64{out[4]}
	if s := must(m.Generate(prompt, &o)); s[len(s)-1] != out[4] || len(s) > 5 {
		t.Fatalf("stop token: %v", s)
	}
	o.Temperature = -1
	_, err := m.Generate(prompt, &o)
	wantCode(t, err, ErrInvalidArgument, "temperature")
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("a panic in the callback must come back as a Go panic, got %v", r)
			}
		}()
		o.Temperature = 0
		o.OnToken = func(int64) bool { panic("boom") }
		_, _ = m.Generate(prompt, &o)
	}()
}

func trainJSON(extra string) string {
	return `{"model": ` + tinyJSON + `, "sequence_length": 8, "global_batch_size": 32, "rank_microbatch_size": 16,
	 "max_steps": 4, "optimizer": {"name": "adamw", "lr": 0.01}` + extra + `}`
}

func TestTrainingDataAndCheckpoints(t *testing.T) {
	tcfg := must(TrainConfigFromJSON(trainJSON("")))
	defer tcfg.Close()
	fb := must(tcfg.FlatBuffer())
	again := must(TrainConfigFromFlatBuffer(fb))
	defer again.Close()
	if !strings.Contains(must(again.JSON()), "sequence_length") {
		t.Fatal("train config JSON")
	}
	_, err := TrainConfigFromJSON(trainJSON(`, "ac_mode": "sometimes"`))
	wantCode(t, err, ErrInvalidConfig, "ac_mode")
	cfg := must(tcfg.Model())
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	tr := must(NewTrainer(m, tcfg))
	defer tr.Close()

	x := must(NewTensorInt64(ids(32, 64), 4, 8))
	defer x.Close()
	first := must(tr.Step(x, nil))
	second := must(tr.Step(x, nil))
	if first.Step != 1 || second.Step != 2 || !(second.Loss < first.Loss) || first.Tokens != 32 {
		t.Fatalf("steps %+v %+v", first, second)
	}
	wrong := must(NewTensorInt64(ids(32, 64), 2, 16))
	defer wrong.Close()
	_, err = tr.Step(wrong, nil)
	wantCode(t, err, ErrInvalidArgument, "sequence_length")

	dir := t.TempDir()
	path := must(tr.SaveCheckpoint(dir))
	if !strings.HasSuffix(path, "step2") {
		t.Fatalf("checkpoint path %q", path)
	}
	next := must(tr.Step(x, nil))
	m2 := must(NewModel(cfg, "cpu", nil))
	defer m2.Close()
	tr2 := must(NewTrainer(m2, tcfg))
	defer tr2.Close()
	if err := tr2.LoadCheckpoint(dir); err != nil {
		t.Fatal(err)
	}
	if resumed := must(tr2.Step(x, nil)); resumed.Loss != next.Loss || resumed.Step != 3 {
		t.Fatalf("resume: %+v vs %+v", resumed, next)
	}
	wantCode(t, tr2.LoadCheckpoint(filepath.Join(dir, "nothing")), ErrIO, "no checkpoint")

	o := DefaultDatasetOptions(8, 64)
	o.EOSTokenID = 0
	data := must(DatasetFromTokens(ids(8*20, 64), o))
	defer data.Close()
	tokens, instances := must2(t)(data.Size())
	if tokens != 160 || instances != 20 {
		t.Fatalf("size %d %d", tokens, instances)
	}
	batch := must(data.Batch([]int64{0, 1}))
	defer batch.Close()
	lab := must(batch.Labels.Int64s())
	in := must(batch.InputIDs.Int64s())
	if lab[0] != in[1] || lab[7] != -100 || batch.CuDocLens == nil {
		t.Fatalf("labels %v inputs %v", lab, in)
	}
	_, err = data.Batch([]int64{20})
	wantCode(t, err, ErrInvalidArgument, "indices[0]")
	_, err = DatasetFromTokens([]int64{1, 2, 99}, DefaultDatasetOptions(2, 64))
	wantCode(t, err, ErrInvalidArgument, "tokens[2]")

	file := filepath.Join(dir, "tokens.bin")
	raw := make([]byte, 0, 64)
	for _, v := range ids(32, 64) {
		raw = append(raw, byte(v), 0)
	}
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	fromFile := must(DatasetFromFiles([]string{file, file}, DefaultDatasetOptions(8, 64)))
	defer fromFile.Close()
	if tok, _ := must2(t)(fromFile.Size()); tok != 64 {
		t.Fatalf("file tokens %d", tok)
	}
	if err := os.WriteFile(file+".odd", raw[:3], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = DatasetFromFiles([]string{file + ".odd"}, DefaultDatasetOptions(8, 64))
	wantCode(t, err, ErrParse, "multiple of 2")

	m3 := must(NewModel(cfg, "cpu", nil))
	defer m3.Close()
	tr3 := must(NewTrainer(m3, tcfg))
	defer tr3.Close()
	var losses []float64
	eval := must(tr3.Fit(data, &FitOptions{EvalData: data, OnStep: func(s StepMetrics) bool {
		losses = append(losses, s.Loss)
		return s.Step < 3
	}}))
	if len(losses) != 3 {
		t.Fatalf("the step callback stops training: %v", losses)
	}
	_ = eval
	ev := must(tr3.Evaluate(data, 1))
	if ev.Tokens <= 0 || math.Abs(ev.Perplexity-math.Exp(ev.Loss)) > 1e-6*ev.Perplexity {
		t.Fatalf("eval %+v", ev)
	}
}

func must2(t *testing.T) func(a, b int64, err error) (int64, int64) {
	return func(a, b int64, err error) (int64, int64) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}

func residentBytes(t *testing.T) int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm")
	}
	fields := strings.Fields(string(data))
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// Creating and closing 1,000 models must not grow the resident set: Close frees C memory
// at once, without waiting for Go's garbage collector.
func TestThousandModelsDoNotLeak(t *testing.T) {
	cfg := must(ConfigFromPreset("olmo2_1M", 64))
	defer cfg.Close()
	cycle := func() {
		m := must(NewModel(cfg, "cpu", nil))
		m.Close()
	}
	for i := 0; i < 50; i++ {
		cycle()
	}
	runtime.GC()
	before := residentBytes(t)
	for i := 0; i < 1000; i++ {
		cycle()
	}
	runtime.GC()
	after := residentBytes(t)
	growth := after - before
	t.Logf("resident memory: %d KiB before, %d KiB after 1000 models (growth %d KiB)", before/1024, after/1024, growth/1024)
	if growth > 16<<20 {
		t.Fatalf("resident memory grew by %d MiB over 1000 models", growth>>20)
	}
}
