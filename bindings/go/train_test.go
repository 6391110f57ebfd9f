package olm

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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

// A training step with documents: its loss is the model's masked mean loss on that batch.
func TestStepDocuments(t *testing.T) {
	tcfg := must(TrainConfigFromJSON(trainJSON("")))
	defer tcfg.Close()
	cfg := must(tcfg.Model())
	defer cfg.Close()
	ref := must(NewModel(cfg, "cpu", nil))
	defer ref.Close()
	tokens := ids(32, 64)
	shifted := make([]int64, 32)
	for i := range shifted {
		shifted[i] = -100
		if i%8 != 7 {
			shifted[i] = tokens[i+1]
		}
	}
	x := must(NewTensorInt64(tokens, 4, 8))
	defer x.Close()
	labels := must(NewTensorInt64(shifted, 4, 8))
	defer labels.Close()
	cu := must(NewTensorInt32([]int32{0, 3, 8, 16, 17, 24, 28, 32}, 8))
	defer cu.Close()
	lo := DefaultLossOptions()
	lo.CuDocLens = cu
	masked := must(ref.Loss(x, labels, &lo))
	defer masked.Close()
	plain := must(ref.Loss(x, labels, nil))
	defer plain.Close()
	if math.Abs(masked.LossValue-plain.LossValue) < 1e-4 {
		t.Fatalf("masking must change the loss: %v vs %v", masked.LossValue, plain.LossValue)
	}
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	tr := must(NewTrainer(m, tcfg))
	defer tr.Close()
	step := must(tr.StepDocuments(x, nil, cu))
	if math.Abs(step.Loss-masked.LossValue) > 1e-5*masked.LossValue {
		t.Fatalf("step loss %v, masked model loss %v", step.Loss, masked.LossValue)
	}
	crossing := must(NewTensorInt64([]int64{0, 12, 32}, 3))
	defer crossing.Close()
	_, err := tr.StepDocuments(x, nil, crossing)
	wantCode(t, err, ErrInvalidArgument, "cu_doc_lens")
}

// FitOptions.DocumentMasking: nil follows the config (no generate_doc_lengths: unmasked),
// true masks documents and changes the first loss.
func TestFitDocumentMasking(t *testing.T) {
	tcfg := must(TrainConfigFromJSON(trainJSON("")))
	defer tcfg.Close()
	cfg := must(tcfg.Model())
	defer cfg.Close()
	tokens := make([]int64, 64)
	for i := range tokens {
		tokens[i] = int64((i*7 + 1) % 64)
		if i%3 == 2 {
			tokens[i] = 0
		}
	}
	opts := DefaultDatasetOptions(8, 64)
	opts.EOSTokenID = 0
	data := must(DatasetFromTokens(tokens, opts))
	defer data.Close()
	firstLoss := func(masking *bool) float64 {
		m := must(NewModel(cfg, "cpu", nil))
		defer m.Close()
		tr := must(NewTrainer(m, tcfg))
		defer tr.Close()
		var losses []float64
		must(tr.Fit(data, &FitOptions{OnStep: func(s StepMetrics) bool {
			losses = append(losses, s.Loss)
			return false
		}, DocumentMasking: masking}))
		return losses[0]
	}
	off, on := false, true
	byConfig, unmasked, masked := firstLoss(nil), firstLoss(&off), firstLoss(&on)
	if byConfig != unmasked || math.Abs(masked-unmasked) < 1e-4 {
		t.Fatalf("first losses: config %v, off %v, on %v", byConfig, unmasked, masked)
	}
}

// zeroRNGPosition zeroes the Mersenne Twister position (bytes 8..15 of LibTorch's 5056-byte
// CPU generator state, found by its FlatBuffers length prefix) in a checkpoint's meta.olmk:
// without the metadata's checksum LibTorch refused it only after the weights and counters
// were restored.
func zeroRNGPosition(t *testing.T, meta string) {
	t.Helper()
	bytes, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	at := strings.Index(string(bytes), "\xc0\x13\x00\x00")
	if at < 0 {
		t.Fatal("no RNG state in meta.olmk")
	}
	for i := at + 12; i < at+20; i++ {
		bytes[i] = 0
	}
	if err := os.WriteFile(meta, bytes, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFailedCheckpointLoadLeavesTheTrainerUsable(t *testing.T) {
	tcfg := must(TrainConfigFromJSON(trainJSON("")))
	defer tcfg.Close()
	cfg := must(tcfg.Model())
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	tr := must(NewTrainer(m, tcfg))
	defer tr.Close()
	x := must(NewTensorInt64(ids(32, 64), 4, 8))
	defer x.Close()
	dir, good := t.TempDir(), t.TempDir()
	must(tr.Step(x, nil))
	must(tr.SaveCheckpoint(dir))
	must(tr.Step(x, nil))
	must(tr.SaveCheckpoint(good))
	zeroRNGPosition(t, filepath.Join(dir, "step1", "meta.olmk"))

	wantCode(t, tr.LoadCheckpoint(dir), ErrParse, "meta.olmk")
	after := must(tr.Step(x, nil))
	m2 := must(NewModel(cfg, "cpu", nil))
	defer m2.Close()
	tr2 := must(NewTrainer(m2, tcfg))
	defer tr2.Close()
	if err := tr2.LoadCheckpoint(good); err != nil {
		t.Fatal(err)
	}
	want := must(tr2.Step(x, nil))
	if after.Step != 3 || after.Loss != want.Loss {
		t.Fatalf("the refused load changed the trainer: %+v, want step 3 and %+v", after, want)
	}
}

// Fit(nil, ...) trains on the train config's data section, as `olm train` does.
func TestFitFromTheConfigsData(t *testing.T) {
	dir := t.TempDir()
	raw := make([]byte, 2*2000)
	for i := 0; i < 2000; i++ {
		v := uint16((i*13 + i/7) % 64)
		raw[2*i], raw[2*i+1] = byte(v), byte(v>>8)
	}
	tokens := filepath.Join(dir, "tokens.bin")
	if err := os.WriteFile(tokens, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	tcfg := must(TrainConfigFromJSON(trainJSON(`, "data": {"paths": ["` + tokens + `"]},
	 "eval_data": {"paths": ["` + tokens + `"]}, "eval_batches": 1, "save_folder": "` + filepath.Join(dir, "run") + `"`)))
	defer tcfg.Close()
	cfg := must(tcfg.Model())
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	tr := must(NewTrainer(m, tcfg))
	defer tr.Close()
	steps := 0
	eval := must(tr.Fit(nil, &FitOptions{OnStep: func(s StepMetrics) bool {
		steps++
		return true
	}}))
	if steps != 4 || eval.Tokens == 0 {
		t.Fatalf("%d steps, eval %+v", steps, eval)
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "step4")); err != nil {
		t.Fatal(err)
	}
	// A finished run has nothing left to train.
	_, err := tr.Fit(nil, nil)
	wantCode(t, err, ErrInvalidArgument, "max_steps")
}
