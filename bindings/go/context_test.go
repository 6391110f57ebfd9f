package olm

import (
	"context"
	"errors"
	"testing"
	"time"
)

// FitContext: cancelling after the first step stops training at the next step boundary (the
// config asks for 4 steps) and returns context.Canceled; the trainer stays usable.
func TestFitContextCancelsAfterFirstStep(t *testing.T) {
	tcfg := must(TrainConfigFromJSON(trainJSON("")))
	defer tcfg.Close()
	cfg := must(tcfg.Model())
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	tr := must(NewTrainer(m, tcfg))
	defer tr.Close()
	data := must(DatasetFromTokens(ids(8*20, 64), DefaultDatasetOptions(8, 64)))
	defer data.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var steps []int64
	_, err := tr.FitContext(ctx, data, &FitOptions{OnStep: func(s StepMetrics) bool {
		steps = append(steps, s.Step)
		if s.Step == 1 {
			cancel()
		}
		return true
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("FitContext after cancel: %v, want context.Canceled", err)
	}
	if len(steps) != 1 || steps[0] != 1 {
		t.Fatalf("training went on after the cancellation: steps %v (max_steps 4)", steps)
	}
	// Stopped cleanly: the next step is the second one.
	x := must(NewTensorInt64(ids(32, 64), 4, 8))
	defer x.Close()
	if next := must(tr.Step(x, nil)); next.Step != 2 {
		t.Fatalf("step after the cancelled fit: %d, want 2", next.Step)
	}

	// A context that is already done starts nothing.
	_, err = tr.FitContext(ctx, data, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("FitContext with a done context: %v", err)
	}
	if again := must(tr.Step(x, nil)); again.Step != 3 {
		t.Fatalf("a done context must not train: step %d, want 3", again.Step)
	}

	// A deadline works the same way, and an OnStep that stops first is a clean stop (nil).
	dctx, dcancel := context.WithTimeout(context.Background(), time.Hour)
	defer dcancel()
	steps = nil
	_, err = tr.FitContext(dctx, data, &FitOptions{OnStep: func(s StepMetrics) bool {
		steps = append(steps, s.Step)
		return false
	}})
	if err != nil || len(steps) != 1 {
		t.Fatalf("OnStep stop under a live context: err %v, steps %v", err, steps)
	}
}

// FitContext runs to max_steps when the context is never cancelled, as Fit does.
func TestFitContextRunsToTheEnd(t *testing.T) {
	tcfg := must(TrainConfigFromJSON(trainJSON("")))
	defer tcfg.Close()
	cfg := must(tcfg.Model())
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	tr := must(NewTrainer(m, tcfg))
	defer tr.Close()
	data := must(DatasetFromTokens(ids(8*20, 64), DefaultDatasetOptions(8, 64)))
	defer data.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	steps := 0
	if _, err := tr.FitContext(ctx, data, &FitOptions{OnStep: func(StepMetrics) bool { steps++; return true }}); err != nil {
		t.Fatal(err)
	}
	if steps != 4 {
		t.Fatalf("%d steps, want max_steps 4", steps)
	}
}

// GenerateContext: cancelling after the first token stops generation and returns that token
// with context.Canceled.
func TestGenerateContextCancelsAfterFirstToken(t *testing.T) {
	_, m := tinyModel(t)
	prompt := must(NewTensorInt64([]int64{1, 2, 3}, 3))
	defer prompt.Close()
	o := DefaultGenerateOptions()
	o.MaxNewTokens = 16
	o.Temperature = 0
	full := must(m.Generate(prompt, &o))
	if len(full) != 16 {
		t.Fatalf("%d tokens without cancellation, want 16", len(full))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := 0
	o.OnToken = func(int64) bool {
		seen++
		cancel()
		return true
	}
	tokens, err := m.GenerateContext(ctx, prompt, &o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("GenerateContext after cancel: %v, want context.Canceled", err)
	}
	if seen != 1 || len(tokens) != 1 || tokens[0] != full[0] {
		t.Fatalf("generation went on after the cancellation: %d callbacks, tokens %v (full %v)", seen, tokens, full)
	}

	tokens, err = m.GenerateContext(ctx, prompt, &o)
	if !errors.Is(err, context.Canceled) || tokens != nil || seen != 1 {
		t.Fatalf("a done context must generate nothing: %v %v (%d callbacks)", tokens, err, seen)
	}
	// A live context without OnToken generates everything.
	o.OnToken = nil
	live, lcancel := context.WithCancel(context.Background())
	defer lcancel()
	if got := must(m.GenerateContext(live, prompt, &o)); len(got) != 16 {
		t.Fatalf("live context: %d tokens", len(got))
	}
}

// EvaluateContext: libolm's evaluation has no callback, so only a context that is done before
// the call is honoured; a live one gives Evaluate's result.
func TestEvaluateContext(t *testing.T) {
	tcfg := must(TrainConfigFromJSON(trainJSON("")))
	defer tcfg.Close()
	cfg := must(tcfg.Model())
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	tr := must(NewTrainer(m, tcfg))
	defer tr.Close()
	data := must(DatasetFromTokens(ids(8*20, 64), DefaultDatasetOptions(8, 64)))
	defer data.Close()
	want := must(tr.Evaluate(data, 2))
	ctx, cancel := context.WithCancel(context.Background())
	if got := must(tr.EvaluateContext(ctx, data, 2)); got != want {
		t.Fatalf("EvaluateContext %+v, Evaluate %+v", got, want)
	}
	cancel()
	if _, err := tr.EvaluateContext(ctx, data, 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("EvaluateContext with a done context: %v", err)
	}
}
