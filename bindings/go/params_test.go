package olm

import (
	"math"
	"sync"
	"testing"
)

const wq = "blocks.0.attention.w_q.weight"

func TestParameterByName(t *testing.T) {
	_, m := tinyModel(t)
	for _, info := range must(m.Parameters()) {
		p := must(m.Parameter(info.Name))
		if must(p.Dtype()) != info.Dtype || len(must(p.Shape())) != len(info.Shape) {
			t.Fatalf("%s: %v %v vs %+v", info.Name, must(p.Dtype()), must(p.Shape()), info)
		}
		p.Close()
	}
	values := make([]float32, 32*32)
	for i := range values {
		values[i] = float32(i%97)*0.001 - 0.05
	}
	v := must(NewTensorFloat32(values, 32, 32))
	defer v.Close()
	if err := m.SetParameter(wq, v); err != nil {
		t.Fatal(err)
	}
	back := must(m.Parameter(wq))
	defer back.Close()
	got := must(back.Float32s())
	for i := range got {
		if got[i] != values[i] {
			t.Fatalf("element %d: %v, want %v", i, got[i], values[i])
		}
	}
	_, err := m.Parameter("blocks.0.attention.wq.weight")
	wantCode(t, err, ErrInvalidArgument, `did you mean "`+wq+`"`)
	wrong := must(NewTensorFloat32(make([]float32, 16*32), 16, 32))
	defer wrong.Close()
	wantCode(t, m.SetParameter(wq, wrong), ErrInvalidArgument, "value: shape [16, 32]")
	ints := must(NewTensorInt64(make([]int64, 32*32), 32, 32))
	defer ints.Close()
	wantCode(t, m.SetParameter(wq, ints), ErrInvalidArgument, "value: dtype")
	wantCode(t, m.SetParameter(wq, nil), ErrInvalidArgument, "value: NULL")
}

func TestSetParameterKeepsTraining(t *testing.T) {
	tc := must(TrainConfigFromJSON(`{"model": ` + tinyJSON + `, "sequence_length": 8, "global_batch_size": 16,
		"max_steps": 4, "optimizer": {"name": "adamw", "lr": 0.01}}`))
	defer tc.Close()
	cfg := must(tc.Model())
	defer cfg.Close()
	var models [2]*Model
	var trainers [2]*Trainer
	for i := range models {
		models[i] = must(NewModel(cfg, "cpu", nil))
		defer models[i].Close()
		trainers[i] = must(NewTrainer(models[i], tc))
		defer trainers[i].Close()
	}
	x := must(NewTensorInt64(ids(16, 64), 2, 8))
	defer x.Close()
	for i := range trainers {
		must(trainers[i].Step(x, nil))
	}
	same := must(models[1].Parameter(wq))
	if err := models[1].SetParameter(wq, same); err != nil {
		t.Fatal(err)
	}
	same.Close()
	a, b := must(trainers[0].Step(x, nil)), must(trainers[1].Step(x, nil))
	if a.Loss != b.Loss {
		t.Fatalf("rewriting a parameter with its own values changed training: %v vs %v", a.Loss, b.Loss)
	}
}

func TestDLPackRoundTrip(t *testing.T) {
	src := must(NewTensorFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3))
	dl := must(src.ToDLPack())
	data := dl.Data()
	(*[6]float32)(data)[4] = 50 // zero-copy: the tensor sees it
	if got := must(src.Float32s()); got[4] != 50 {
		t.Fatalf("export copied: %v", got)
	}
	back := must(TensorFromDLPack(dl))
	if dl.Ptr() != nil {
		t.Fatal("the imported tensor owns the DLManagedTensor now")
	}
	src.Close()
	again := must(back.ToDLPack())
	if again.Data() != data {
		t.Fatalf("round trip copied: %p vs %p", again.Data(), data)
	}
	back.Close()
	if v := (*[6]float32)(again.Data())[4]; v != 50 {
		t.Fatalf("the export keeps the memory alive: %v", v)
	}
	again.Close()
	again.Close()
	_, err := TensorFromDLPack(nil)
	wantCode(t, err, ErrInvalidArgument, "dl_managed_tensor: NULL")
	var closed *Tensor
	_, err = closed.ToDLPack()
	wantCode(t, err, ErrInvalidArgument, "tensor: NULL")
}

func TestNumThreads(t *testing.T) {
	original := NumThreads()
	if original < 1 {
		t.Fatalf("NumThreads() = %d", original)
	}
	wantCode(t, SetNumThreads(0), ErrInvalidArgument, "num_threads: 0")
	wantCode(t, SetNumThreads(1025), ErrInvalidArgument, "num_threads: 1025")
	wantCode(t, SetNumThreads(math.MaxInt32+1), ErrInvalidArgument, "num_threads")
	target := 1
	if original == 1 {
		target = 2
	}
	if err := SetNumThreads(target); err != nil {
		t.Fatal(err)
	}
	defer SetNumThreads(original)
	// Every goroutine sees it, whichever OS thread runs it.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n := NumThreads(); n != target {
				t.Errorf("NumThreads() = %d on another goroutine, want %d", n, target)
			}
		}()
	}
	wg.Wait()
}

func TestLossDivFactorUnsetAndOne(t *testing.T) {
	cfg := must(ConfigFromJSON(tinyMoEJSON))
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	x := must(NewTensorInt64(ids(16, 64), 2, 8))
	defer x.Close()
	unset := must(m.Loss(x, x, nil))
	defer unset.Close()
	opts := DefaultLossOptions()
	opts.LossDivFactor = 1
	one := must(m.Loss(x, x, &opts))
	defer one.Close()
	if math.Abs(one.LBLossValue-16*unset.LBLossValue) > 1e-5 || math.Abs(one.LossValue-unset.LossValue) > 1e-6 {
		t.Fatalf("a divisor of 1: lb %v vs unset %v (x16)", one.LBLossValue, unset.LBLossValue)
	}
}
