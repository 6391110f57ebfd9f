package olm

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func tinyModel(t *testing.T) (*Config, *Model) {
	t.Helper()
	cfg := must(ConfigFromJSON(tinyJSON))
	t.Cleanup(func() { cfg.Close() })
	m := must(NewModel(cfg, "cpu", nil))
	t.Cleanup(func() { m.Close() })
	return cfg, m
}

func TestModelOptions(t *testing.T) {
	d := DefaultModelOptions()
	if d.ParamDtype != ConfigDtype || !d.InitWeights {
		t.Fatalf("model defaults %+v", d)
	}
	if f := DefaultForwardOptions(); f.LogitsToKeep != 0 || f.CuDocLens != nil || f.MaxDocLen != 0 {
		t.Fatalf("forward defaults %+v", f)
	}
	l := DefaultLossOptions()
	if l.IgnoreIndex != -100 || l.Reduction != Mean || l.ZLossMultiplier != 0 || l.LossDivFactor != 0 ||
		l.ReturnLogits || l.LogitsToKeep != 0 || l.CuDocLens != nil || l.MaxDocLen != 0 {
		t.Fatalf("loss defaults %+v", l)
	}

	cfg := must(ConfigFromJSON(tinyJSON))
	defer cfg.Close()
	bf := DefaultModelOptions()
	bf.ParamDtype = BFloat16
	m := must(NewModel(cfg, "cpu", &bf))
	defer m.Close()
	for _, p := range must(m.Parameters()) {
		if p.Dtype != BFloat16 {
			t.Fatalf("%s is %v, want bfloat16", p.Name, p.Dtype)
		}
	}
	x := must(NewTensorInt64(ids(8, 64), 1, 8))
	defer x.Close()
	logits := must(m.Forward(x, nil))
	defer logits.Close()
	if must(logits.Dtype()) != Float32 {
		t.Fatal("logits are float32 whatever the parameter dtype")
	}
	allFinite(t, must(logits.Float32s()))

	zero := DefaultModelOptions()
	zero.InitWeights = false
	z := must(NewModel(cfg, "cpu", &zero))
	defer z.Close()
	zl := must(z.Forward(x, nil))
	defer zl.Close()
	for _, v := range must(zl.Float32s()) {
		if v != 0 {
			t.Fatalf("uninitialized (zero) weights give zero logits, got %v", v)
		}
	}

	// The zero value of ModelOptions is not the default: ParamDtype 0 is int32.
	_, err := NewModel(cfg, "cpu", &ModelOptions{})
	wantCode(t, err, ErrInvalidArgument, "param_dtype")
	_, err = NewModel(cfg, "gpu", nil)
	wantCode(t, err, ErrInvalidArgument, "device")
	_, err = NewModel(cfg, "", nil)
	wantCode(t, err, ErrInvalidArgument, "device")
	if CudaDeviceCount() == 0 {
		_, err = NewModel(cfg, "cuda", nil)
		wantCode(t, err, ErrDeviceUnavailable, "CUDA")
	}
	_, err = NewModel(cfg, "cuda:999", nil)
	wantCode(t, err, ErrDeviceUnavailable, "")
}

func TestForward(t *testing.T) {
	_, m := tinyModel(t)
	x := must(NewTensorInt64(ids(2*8, 64), 2, 8))
	defer x.Close()
	logits := must(m.Forward(x, nil))
	defer logits.Close()
	sameShape(t, logits, 2, 8, 64)
	values := must(logits.Float32s())
	allFinite(t, values)

	// int32 ids give the same logits as int64 ids.
	in32 := make([]int32, 16)
	for i, v := range ids(16, 64) {
		in32[i] = int32(v)
	}
	x32 := must(NewTensorInt32(in32, 2, 8))
	defer x32.Close()
	l32 := must(m.Forward(x32, nil))
	defer l32.Close()
	for i, v := range must(l32.Float32s()) {
		if v != values[i] {
			t.Fatalf("int32 ids: logit %d is %v, int64 gives %v", i, v, values[i])
		}
	}

	// Keeping the last 3 positions keeps their logits.
	last := must(m.Forward(x, &ForwardOptions{LogitsToKeep: 3}))
	defer last.Close()
	sameShape(t, last, 2, 3, 64)
	kept := must(last.Float32s())
	for b := 0; b < 2; b++ {
		for p := 0; p < 3; p++ {
			for v := 0; v < 64; v++ {
				got, want := kept[(b*3+p)*64+v], values[(b*8+5+p)*64+v]
				if math.Abs(float64(got-want)) > 1e-5 {
					t.Fatalf("kept logit [%d,%d,%d] %v vs %v", b, p, v, got, want)
				}
			}
		}
	}

	bad := must(NewTensorInt64([]int64{1, 2, 64, 3}, 1, 4))
	defer bad.Close()
	_, err := m.Forward(bad, nil)
	wantCode(t, err, ErrInvalidArgument, "input_ids")
	neg := must(NewTensorInt64([]int64{1, -1}, 1, 2))
	defer neg.Close()
	_, err = m.Forward(neg, nil)
	wantCode(t, err, ErrInvalidArgument, "input_ids")
	flat := must(NewTensorInt64([]int64{1, 2}, 2))
	defer flat.Close()
	_, err = m.Forward(flat, nil)
	wantCode(t, err, ErrInvalidArgument, "shape")
	fl := must(NewTensorFloat32([]float32{1, 2}, 1, 2))
	defer fl.Close()
	_, err = m.Forward(fl, nil)
	wantCode(t, err, ErrInvalidArgument, "dtype")
	_, err = m.Forward(x, &ForwardOptions{LogitsToKeep: -1})
	wantCode(t, err, ErrInvalidArgument, "logits_to_keep")
	_, err = m.Forward(nil, nil)
	wantCode(t, err, ErrInvalidArgument, "input_ids")
}

func TestLoss(t *testing.T) {
	_, m := tinyModel(t)
	x := must(NewTensorInt64(ids(2*8, 64), 2, 8))
	defer x.Close()
	logits := must(m.Forward(x, nil))
	defer logits.Close()
	values := must(logits.Float32s())

	// Next-token labels with the last position of each row ignored.
	in := ids(2*8, 64)
	lab := make([]int64, 16)
	for i := range lab {
		if i%8 == 7 {
			lab[i] = -100
		} else {
			lab[i] = in[i+1]
		}
	}
	labels := must(NewTensorInt64(lab, 2, 8))
	defer labels.Close()

	mean := must(m.Loss(x, labels, nil))
	defer mean.Close()
	if mean.ZLoss != nil || mean.Logits != nil || mean.ZLossValue != 0 {
		t.Fatal("no z-loss or logits unless asked")
	}
	sameShape(t, mean.Loss /* scalar */)
	if v := must(mean.Loss.Float32s()); math.Abs(float64(v[0])-mean.LossValue) > 1e-6 {
		t.Fatalf("loss tensor %v vs value %v", v[0], mean.LossValue)
	}
	if mean.LossValue != mean.CELossValue || !(mean.LossValue > 0) {
		t.Fatalf("loss %v ce %v", mean.LossValue, mean.CELossValue)
	}

	// The mean equals cross-entropy computed here from the logits.
	var want float64
	for i, target := range lab {
		if target < 0 {
			continue
		}
		row := values[i*64 : (i+1)*64]
		maxv := float64(row[0])
		for _, v := range row {
			maxv = math.Max(maxv, float64(v))
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v) - maxv)
		}
		want += maxv + math.Log(sum) - float64(row[target])
	}
	want /= 14
	if math.Abs(mean.CELossValue-want) > 1e-4 {
		t.Fatalf("mean cross-entropy %v, computed %v", mean.CELossValue, want)
	}

	// None: per position, zero where ignored; its mean and sum agree with the reductions.
	opts := DefaultLossOptions()
	opts.Reduction = None
	none := must(m.Loss(x, labels, &opts))
	defer none.Close()
	sameShape(t, none.Loss, 2, 8)
	if none.LossValue != 0 {
		t.Fatalf("none gives no number: %v", none.LossValue)
	}
	var total float64
	for i, v := range must(none.CELoss.Float32s()) {
		if lab[i] < 0 && v != 0 {
			t.Fatalf("ignored position %d has loss %v", i, v)
		}
		total += float64(v)
	}
	if math.Abs(total/14-mean.CELossValue) > 1e-5 {
		t.Fatalf("mean %v vs none %v", mean.CELossValue, total/14)
	}
	opts.Reduction = Sum
	sum := must(m.Loss(x, labels, &opts))
	defer sum.Close()
	if math.Abs(sum.CELossValue-total) > 1e-4 {
		t.Fatalf("sum %v vs none %v", sum.CELossValue, total)
	}

	// z-loss, the divisor, returned logits and a custom ignore index.
	opts = DefaultLossOptions()
	opts.ZLossMultiplier = 1e-4
	opts.LossDivFactor = 2
	opts.ReturnLogits = true
	z := must(m.Loss(x, labels, &opts))
	defer z.Close()
	if z.ZLoss == nil || !(z.ZLossValue > 0) || math.Abs(z.LossValue-z.CELossValue-z.ZLossValue) > 1e-6 {
		t.Fatalf("z-loss %v loss %v ce %v", z.ZLossValue, z.LossValue, z.CELossValue)
	}
	if math.Abs(z.CELossValue-mean.CELossValue/2) > 1e-6 {
		t.Fatalf("divided ce %v vs %v / 2", z.CELossValue, mean.CELossValue)
	}
	sameShape(t, z.Logits, 2, 8, 64)
	for i, v := range must(z.Logits.Float32s()) {
		if math.Abs(float64(v-values[i])) > 1e-5 {
			t.Fatalf("returned logit %d %v vs forward %v", i, v, values[i])
		}
	}
	// Token 0 never occurs among the targets, so it can stand for "ignored".
	custom := append([]int64{}, lab...)
	for i := range custom {
		if custom[i] == -100 {
			custom[i] = 0
		}
	}
	cl := must(NewTensorInt64(custom, 2, 8))
	defer cl.Close()
	opts = DefaultLossOptions()
	opts.IgnoreIndex = 0
	ci := must(m.Loss(x, cl, &opts))
	defer ci.Close()
	if math.Abs(ci.CELossValue-mean.CELossValue) > 1e-6 {
		t.Fatalf("ignore_index 0: %v vs %v", ci.CELossValue, mean.CELossValue)
	}
	opts = DefaultLossOptions()
	opts.LogitsToKeep = 3
	opts.Reduction = None
	k := must(m.Loss(x, labels, &opts))
	defer k.Close()
	sameShape(t, k.Loss, 2, 3)
	mean.Close()
	mean.Close() // idempotent
}

func TestLossErrors(t *testing.T) {
	_, m := tinyModel(t)
	x := must(NewTensorInt64(ids(2*8, 64), 2, 8))
	defer x.Close()
	labels := must(NewTensorInt64(ids(2*8, 64), 2, 8))
	defer labels.Close()

	short := must(NewTensorInt64(ids(2*4, 64), 2, 4))
	defer short.Close()
	_, err := m.Loss(x, short, nil)
	wantCode(t, err, ErrInvalidArgument, "labels")
	oov := append(ids(15, 64), 64)
	big := must(NewTensorInt64(oov, 2, 8))
	defer big.Close()
	_, err = m.Loss(x, big, nil)
	wantCode(t, err, ErrInvalidArgument, "labels")
	_, err = m.Loss(big, labels, nil)
	wantCode(t, err, ErrInvalidArgument, "input_ids")
	fl := must(NewTensorFloat32(make([]float32, 16), 2, 8))
	defer fl.Close()
	_, err = m.Loss(x, fl, nil)
	wantCode(t, err, ErrInvalidArgument, "dtype")
	_, err = m.Loss(x, nil, nil)
	wantCode(t, err, ErrInvalidArgument, "labels")

	opts := DefaultLossOptions()
	opts.Reduction = Reduction(7)
	_, err = m.Loss(x, labels, &opts)
	wantCode(t, err, ErrInvalidArgument, "reduction")
	// A divisor must be finite (0 is unset).
	opts = DefaultLossOptions()
	opts.LossDivFactor = math.NaN()
	_, err = m.Loss(x, labels, &opts)
	wantCode(t, err, ErrInvalidArgument, "loss_div_factor")
}

func TestParametersAndSafetensors(t *testing.T) {
	cfg, m := tinyModel(t)
	params := must(m.Parameters())
	var sum int64
	names := map[string]bool{}
	for _, p := range params {
		n := int64(1)
		for _, d := range p.Shape {
			n *= d
		}
		sum += n
		names[p.Name] = true
		if p.Dtype != Float32 || !p.Trainable {
			t.Fatalf("%s: %v, trainable %v", p.Name, p.Dtype, p.Trainable)
		}
	}
	frozenCfg := must(ConfigFromJSON(strings.Replace(tinyJSON, `"n_layers": 2`, `"n_layers": 2, "freeze_params": ["blocks.0.*"]`, 1)))
	defer frozenCfg.Close()
	frozen := must(NewModel(frozenCfg, "cpu", nil))
	defer frozen.Close()
	for _, p := range must(frozen.Parameters()) {
		if p.Trainable == strings.HasPrefix(p.Name, "blocks.0.") {
			t.Fatalf("%s: trainable %v", p.Name, p.Trainable)
		}
	}
	if params[0].Name != "embeddings.weight" || params[0].Shape[0] != 64 || params[0].Shape[1] != 32 {
		t.Fatalf("first parameter %+v", params[0])
	}
	for _, name := range []string{"blocks.0.attention.w_q.weight", "blocks.1.feed_forward.w1.weight",
		"blocks.0.attention_norm.weight", "lm_head.norm.weight", "lm_head.w_out.weight"} {
		if !names[name] {
			t.Fatalf("no parameter %q in %v", name, names)
		}
	}
	if sum != must(m.NumParams()) {
		t.Fatalf("parameter sizes sum to %d, NumParams %d", sum, must(m.NumParams()))
	}

	x := must(NewTensorInt64(ids(2*8, 64), 2, 8))
	defer x.Close()
	values := must(must(m.Forward(x, nil)).Float32s())
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	if err := m.SaveSafetensors(path); err != nil {
		t.Fatal(err)
	}
	opts := DefaultModelOptions()
	opts.InitWeights = false
	m2 := must(NewModel(cfg, "cpu", &opts))
	defer m2.Close()
	if err := m2.LoadSafetensors(path); err != nil {
		t.Fatal(err)
	}
	again := must(m2.Forward(x, nil))
	defer again.Close()
	for i, v := range must(again.Float32s()) {
		if v != values[i] {
			t.Fatalf("a save/load round trip must reproduce the logits exactly: %d: %v vs %v", i, v, values[i])
		}
	}

	// Errors leave the model unchanged.
	unchanged := func() {
		t.Helper()
		l := must(m2.Forward(x, nil))
		defer l.Close()
		for i, v := range must(l.Float32s()) {
			if v != values[i] {
				t.Fatal("a failed load changed the model")
			}
		}
	}
	wantCode(t, m2.LoadSafetensors(filepath.Join(dir, "missing.safetensors")), ErrIO, "missing.safetensors")
	unchanged()
	garbage := filepath.Join(dir, "garbage.safetensors")
	if err := os.WriteFile(garbage, []byte("\xff\xff\xff\xff\xff\xff\xff\x7fnot safetensors"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantCode(t, m2.LoadSafetensors(garbage), ErrParse, "")
	raw := must(os.ReadFile(path))
	truncated := filepath.Join(dir, "truncated.safetensors")
	if err := os.WriteFile(truncated, raw[:len(raw)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	wantCode(t, m2.LoadSafetensors(truncated), ErrParse, "")
	unchanged()
	other := must(ConfigFromPreset("olmo2_1M", 64))
	defer other.Close()
	om := must(NewModel(other, "cpu", nil))
	defer om.Close()
	otherPath := filepath.Join(dir, "other.safetensors")
	if err := om.SaveSafetensors(otherPath); err != nil {
		t.Fatal(err)
	}
	wantCode(t, m2.LoadSafetensors(otherPath), ErrMismatch, "")
	unchanged()
	wantCode(t, m.SaveSafetensors(filepath.Join(dir, "no", "such", "dir", "w.safetensors")), ErrIO, "")

	// A closed model is an error, not a crash.
	m2.Close()
	m2.Close()
	_, err := m2.Forward(x, nil)
	wantCode(t, err, ErrInvalidArgument, "model")
	_, err = m2.Parameters()
	wantCode(t, err, ErrInvalidArgument, "")
	_, err = m2.NumParams()
	wantCode(t, err, ErrInvalidArgument, "")
	wantCode(t, m2.SaveSafetensors(path), ErrInvalidArgument, "")
	wantCode(t, m2.LoadSafetensors(path), ErrInvalidArgument, "")
	_, err = m2.Loss(x, x, nil)
	wantCode(t, err, ErrInvalidArgument, "")
}

// Different models may be used from different goroutines at once (one handle each).
func TestNormalizeMatrices(t *testing.T) {
	cfg := must(ConfigFromJSON(`{"name": "normalized", "d_model": 32, "vocab_size": 64, "n_layers": 2, "init_method": "normalized",
 "block": {"name": "normalized", "attention": {"name": "normalized", "n_heads": 4, "qk_norm": {"name": "l2_norm"},
   "rope": {"theta": 500000}}, "feed_forward": {"name": "normalized", "hidden_size": 96}},
 "lm_head": {"name": "normalized"}}`))
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	x := must(NewTensorInt64([]int64{1, 2, 3, 4, 5, 6, 7, 8}, 1, 8))
	defer x.Close()
	before := must(must(m.Forward(x, nil)).Float32s())
	if err := m.NormalizeMatrices(); err != nil {
		t.Fatal(err)
	}
	after := must(must(m.Forward(x, nil)).Float32s())
	for i := range before {
		if math.Abs(float64(before[i]-after[i])) > 1e-4 {
			t.Fatalf("logit %d moved from %v to %v", i, before[i], after[i])
		}
	}
	_, plain := tinyModel(t)
	wantCode(t, plain.NormalizeMatrices(), ErrInvalidArgument, "not a normalized")
}

func TestModelsOnGoroutines(t *testing.T) {
	cfg := must(ConfigFromJSON(tinyJSON))
	defer cfg.Close()
	ref := must(NewModel(cfg, "cpu", nil))
	defer ref.Close()
	x := must(NewTensorInt64(ids(8, 64), 1, 8))
	defer x.Close()
	want := must(must(ref.Forward(x, nil)).Float32s())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := NewModel(cfg, "cpu", nil) // same config and init seed: same weights
			if err != nil {
				errs <- err
				return
			}
			defer m.Close()
			in, _ := NewTensorInt64(ids(8, 64), 1, 8)
			defer in.Close()
			for i := 0; i < 20; i++ {
				l, err := m.Forward(in, nil)
				if err != nil {
					errs <- err
					return
				}
				got, err := l.Float32s()
				l.Close()
				if err != nil || got[0] != want[0] || got[len(got)-1] != want[len(want)-1] {
					errs <- &Error{Code: ErrInternal, Message: "concurrent logits differ"}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// On a machine with CUDA, a model on the GPU gives the CPU model's logits.
func TestCUDA(t *testing.T) {
	if CudaDeviceCount() == 0 {
		t.Skip("no CUDA device")
	}
	cfg, m := tinyModel(t)
	g := must(NewModel(cfg, "cuda", nil))
	defer g.Close()
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := m.SaveSafetensors(path); err != nil {
		t.Fatal(err)
	}
	if err := g.LoadSafetensors(path); err != nil {
		t.Fatal(err)
	}
	x := must(NewTensorInt64(ids(16, 64), 2, 8))
	defer x.Close()
	want := must(must(m.Forward(x, nil)).Float32s())
	got := must(must(g.Forward(x, nil)).Float32s())
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-3 {
			t.Fatalf("cuda logit %d %v vs cpu %v", i, got[i], want[i])
		}
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

// Intra-document masking: each document of a packed row gets the logits of a forward over it
// alone (float32 rounding: 1e-5), through ForwardOptions and LossOptions.
func TestDocumentMasking(t *testing.T) {
	_, m := tinyModel(t)
	tokens := ids(16, 64)
	x := must(NewTensorInt64(tokens, 2, 8))
	defer x.Close()
	cu := must(NewTensorInt32([]int32{0, 3, 8, 10, 16}, 5))
	defer cu.Close()
	packedT := must(m.Forward(x, &ForwardOptions{CuDocLens: cu, MaxDocLen: 6}))
	defer packedT.Close()
	packed := must(packedT.Float32s())
	plainT := must(m.Forward(x, nil))
	defer plainT.Close()
	plain := must(plainT.Float32s())
	worst, changed := 0.0, 0.0
	for _, d := range [][2]int{{0, 3}, {3, 8}, {8, 10}, {10, 16}} {
		alone := must(NewTensorInt64(tokens[d[0]:d[1]], 1, int64(d[1]-d[0])))
		out := must(m.Forward(alone, nil))
		for i, v := range must(out.Float32s()) {
			worst = math.Max(worst, math.Abs(float64(v-packed[d[0]*64+i])))
		}
		out.Close()
		alone.Close()
	}
	for i := range plain {
		changed = math.Max(changed, math.Abs(float64(plain[i]-packed[i])))
	}
	if worst > 1e-5 || changed < 1e-3 {
		t.Fatalf("packed vs separate documents: %g (want <= 1e-5); vs unmasked: %g (want a change)", worst, changed)
	}

	lo := DefaultLossOptions()
	lo.ReturnLogits = true
	lo.CuDocLens = cu
	res := must(m.Loss(x, x, &lo))
	defer res.Close()
	for i, v := range must(res.Logits.Float32s()) {
		if v != packed[i] {
			t.Fatalf("loss logit %d is %v, forward gives %v", i, v, packed[i])
		}
	}

	_, err := m.Forward(x, &ForwardOptions{CuDocLens: cu, MaxDocLen: 5})
	wantCode(t, err, ErrInvalidArgument, "max_doc_len")
	crossing := must(NewTensorInt64([]int64{0, 4, 12, 16}, 4))
	defer crossing.Close()
	lo.CuDocLens = crossing
	_, err = m.Loss(x, x, &lo)
	wantCode(t, err, ErrInvalidArgument, "cu_doc_lens")
	closed := must(NewTensorInt32([]int32{0, 8, 16}, 3))
	closed.Close()
	_, err = m.Forward(x, &ForwardOptions{CuDocLens: closed})
	wantCode(t, err, ErrInvalidArgument, "cu_doc_lens")
}

const tinyMoEJSON = `{"name": "moe", "d_model": 32, "vocab_size": 64, "n_layers": 2,
 "block": {"name": "moe_reordered_norm",
   "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000}},
   "feed_forward_moe": {"name": "dropless", "num_experts": 4, "hidden_size": 16, "router": {"top_k": 2},
                        "lb_loss_weight": 0.01, "z_loss_weight": 0.001},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}}`

func TestMixtureOfExperts(t *testing.T) {
	// TransformerConfig.smallmoe(vocab_size=100278) in OLMo-core 3.0.0: num_params,
	// num_non_embedding_params, num_active_params, num_active_non_embedding_params.
	small := must(ConfigFromPreset("smallmoe", 100278))
	defer small.Close()
	if total, nonEmb := must2(t)(small.NumParams()); total != 564923136 || nonEmb != 487909632 {
		t.Fatalf("smallmoe params %d %d", total, nonEmb)
	}
	if active, activeNonEmb := must2(t)(small.NumActiveParams()); active != 267651840 || activeNonEmb != 190638336 {
		t.Fatalf("smallmoe active params %d %d", active, activeNonEmb)
	}
	_, err := ConfigFromJSON(strings.Replace(tinyMoEJSON, `"top_k": 2`, `"top_k": 5`, 1))
	wantCode(t, err, ErrInvalidConfig, "block.feed_forward_moe.router.top_k")

	cfg := must(ConfigFromJSON(tinyMoEJSON))
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	ids := make([]int64, 16)
	for i := range ids {
		ids[i] = int64(i*7+3) % 64
	}
	x := must(NewTensorInt64(ids, 2, 8))
	defer x.Close()
	out := must(m.Loss(x, x, nil))
	defer out.Close()
	if out.LBLoss == nil || out.RouterZLoss == nil || !(out.LBLossValue > 0) || !(out.RouterZLossValue > 0) {
		t.Fatalf("aux losses %v %v", out.LBLossValue, out.RouterZLossValue)
	}
	if math.Abs(out.LossValue-out.CELossValue) > 1e-6 {
		t.Fatalf("aux losses must stay out of Loss: %v vs %v", out.LossValue, out.CELossValue)
	}
	// Divided by the 16 input tokens unless LossDivFactor is given.
	opts := DefaultLossOptions()
	opts.LossDivFactor = 4
	div := must(m.Loss(x, x, &opts))
	defer div.Close()
	if math.Abs(div.LBLossValue*4-out.LBLossValue*16) > 1e-6 || math.Abs(div.RouterZLossValue*4-out.RouterZLossValue*16) > 1e-6 {
		t.Fatalf("loss_div_factor: %v %v vs %v %v", div.LBLossValue, div.RouterZLossValue, out.LBLossValue, out.RouterZLossValue)
	}

	tc := must(TrainConfigFromJSON(`{"model": ` + tinyMoEJSON + `, "sequence_length": 8, "global_batch_size": 16,
		"max_steps": 2, "optimizer": {"name": "adamw", "lr": 0.01}}`))
	defer tc.Close()
	tcModel := must(tc.Model())
	defer tcModel.Close()
	tm := must(NewModel(tcModel, "cpu", nil))
	defer tm.Close()
	tr := must(NewTrainer(tm, tc))
	defer tr.Close()
	step := must(tr.Step(x, nil))
	if !(step.LBLoss > 0) || !(step.RouterZLoss > 0) || math.Abs(step.Loss-step.CELoss-step.ZLoss) > 1e-9 {
		t.Fatalf("step metrics %+v", step)
	}
}
