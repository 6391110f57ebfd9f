package olm

import (
	"io"
	"testing"
)

// Every handle is an io.Closer.
var (
	_ io.Closer = (*Config)(nil)
	_ io.Closer = (*Model)(nil)
	_ io.Closer = (*Tensor)(nil)
	_ io.Closer = (*LossResult)(nil)
	_ io.Closer = (*TrainConfig)(nil)
	_ io.Closer = (*Trainer)(nil)
	_ io.Closer = (*Dataset)(nil)
	_ io.Closer = (*Batch)(nil)
	_ io.Closer = (*Dist)(nil)
)

// Close returns nil the first time, the second time and on nil; objects close in any order
// (a trainer keeps its model alive inside libolm).
func TestCloseIsIdempotent(t *testing.T) {
	tcfg := must(TrainConfigFromJSON(trainJSON("")))
	cfg := must(tcfg.Model())
	m := must(NewModel(cfg, "cpu", nil))
	tr := must(NewTrainer(m, tcfg))
	x := must(NewTensorInt64(ids(32, 64), 4, 8))
	loss := must(m.Loss(x, x, nil))
	data := must(DatasetFromTokens(ids(8*20, 64), DefaultDatasetOptions(8, 64)))
	batch := must(data.Batch([]int64{0, 1, 2, 3}))
	do := DefaultDistOptions()
	do.Backend, do.Rank, do.WorldSize = DistGloo, 0, 1
	do.MasterAddr, do.MasterPort, do.TimeoutSeconds = "127.0.0.1", int32(freePort(t)), 30
	dist := must(NewDist(do))

	// The model goes first: the trainer still steps on it.
	closers := []io.Closer{m, cfg, loss, tcfg}
	for _, c := range closers {
		if err := c.Close(); err != nil {
			t.Fatalf("%T.Close: %v", c, err)
		}
	}
	if _, err := tr.Step(x, nil); err != nil {
		t.Fatalf("the trainer keeps its model alive: %v", err)
	}
	closers = append(closers, tr, x, data, batch, dist)
	for round := 0; round < 2; round++ {
		for _, c := range closers {
			if err := c.Close(); err != nil {
				t.Fatalf("round %d: %T.Close: %v", round, c, err)
			}
		}
	}
	nils := []io.Closer{(*Config)(nil), (*Model)(nil), (*Tensor)(nil), (*LossResult)(nil), (*TrainConfig)(nil),
		(*Trainer)(nil), (*Dataset)(nil), (*Batch)(nil), (*Dist)(nil)}
	for _, c := range nils {
		if err := c.Close(); err != nil {
			t.Fatalf("nil %T.Close: %v", c, err)
		}
	}
	_, err := m.Forward(x, nil)
	wantCode(t, err, ErrInvalidArgument, "")
}
