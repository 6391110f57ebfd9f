// Builds a preset OLMo-2 model, runs a forward pass, a loss and a greedy generation bounded by
// a context, and prints the numbers.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"olm.dev/olm"
)

func run() error {
	cfg, err := olm.ConfigFromPreset("olmo2_1M", 256)
	if err != nil {
		return err
	}
	defer cfg.Close()
	total, nonEmbedding, err := cfg.NumParams()
	if err != nil {
		return err
	}
	model, err := olm.NewModel(cfg, "cpu", nil)
	if err != nil {
		return err
	}
	defer model.Close()

	var tokens []int64 // the bytes of "Hello, world" as token ids
	for _, b := range []byte("Hello, world") {
		tokens = append(tokens, int64(b))
	}
	ids, err := olm.NewTensorInt64(tokens, 1, int64(len(tokens)))
	if err != nil {
		return err
	}
	defer ids.Close()
	logits, err := model.Forward(ids, nil)
	if err != nil {
		return err
	}
	defer logits.Close()
	shape, err := logits.Shape()
	if err != nil {
		return err
	}
	values, err := logits.Float32s()
	if err != nil {
		return err
	}

	// Next-token targets: the input shifted left, the last position ignored.
	targets := append(append([]int64{}, tokens[1:]...), -100)
	labels, err := olm.NewTensorInt64(targets, 1, int64(len(targets)))
	if err != nil {
		return err
	}
	defer labels.Close()
	opts := olm.DefaultLossOptions()
	opts.ZLossMultiplier = 1e-4
	loss, err := model.Loss(ids, labels, &opts)
	if err != nil {
		return err
	}
	defer loss.Close()

	fmt.Printf("olm %s: olmo2_1M with %d parameters (%d non-embedding)\n", olm.Version(), total, nonEmbedding)
	fmt.Printf("logits %v, first %.6f\n", shape, values[0])
	fmt.Printf("loss %.6f = ce %.6f + z %.6f\n", loss.LossValue, loss.CELossValue, loss.ZLossValue)

	// Greedy continuation (the weights are untrained: expect noise). The context stops
	// generation at the next token once it is done.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prompt, err := olm.NewTensorInt64(tokens, int64(len(tokens)))
	if err != nil {
		return err
	}
	defer prompt.Close()
	gen := olm.DefaultGenerateOptions()
	gen.MaxNewTokens, gen.Temperature = 8, 0
	generated, err := model.GenerateContext(ctx, prompt, &gen)
	if err != nil {
		return err
	}
	fmt.Printf("generated %v\n", generated)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
