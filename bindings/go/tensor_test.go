package olm

import (
	"runtime"
	"testing"
	"time"
)

func TestTensors(t *testing.T) {
	a := must(NewTensorInt64([]int64{1, 2, 3, 4, 5, 6}, 2, 3))
	defer a.Close()
	if d := must(a.Dtype()); d != Int64 || d.String() != "int64" {
		t.Fatalf("dtype %v", d)
	}
	sameShape(t, a, 2, 3)
	if n := must(a.NumBytes()); n != 48 {
		t.Fatalf("nbytes %d", n)
	}
	if v := must(a.Int64s()); len(v) != 6 || v[0] != 1 || v[5] != 6 {
		t.Fatalf("values %v", v)
	}
	f := must(NewTensorFloat32([]float32{1.5, -2, 0.25}, 3, 1))
	defer f.Close()
	if v := must(f.Float32s()); v[0] != 1.5 || v[1] != -2 || v[2] != 0.25 {
		t.Fatalf("values %v", v)
	}
	sameShape(t, f, 3, 1)
	i32 := must(NewTensorInt32([]int32{7, -8}, 1, 2))
	defer i32.Close()
	if v := must(i32.Int32s()); v[0] != 7 || v[1] != -8 || must(i32.Dtype()) != Int32 {
		t.Fatalf("values %v", v)
	}
	scalar := must(NewTensorFloat32([]float32{3}))
	defer scalar.Close()
	if s := must(scalar.Shape()); len(s) != 0 {
		t.Fatalf("scalar shape %v", s)
	}
	if v := must(scalar.Float32s()); len(v) != 1 || v[0] != 3 {
		t.Fatalf("scalar %v", v)
	}
	empty := must(NewTensorInt64(nil, 0, 3))
	defer empty.Close()
	sameShape(t, empty, 0, 3)
	if v := must(empty.Int64s()); v == nil || len(v) != 0 {
		t.Fatalf("empty %v", v)
	}
	eight := must(NewTensorInt32([]int32{5}, 1, 1, 1, 1, 1, 1, 1, 1))
	defer eight.Close()
	sameShape(t, eight, 1, 1, 1, 1, 1, 1, 1, 1)

	// The constructors copy: changing the Go slice afterwards changes nothing.
	src := []float32{1, 2}
	c := must(NewTensorFloat32(src, 2))
	defer c.Close()
	src[0] = 99
	if v := must(c.Float32s()); v[0] != 1 {
		t.Fatal("the tensor must hold a copy")
	}
}

func TestTensorErrors(t *testing.T) {
	f := must(NewTensorFloat32([]float32{1.5, -2}, 2))
	defer f.Close()
	_, err := f.Int64s()
	wantCode(t, err, ErrInvalidArgument, "dtype")
	_, err = f.Int32s()
	wantCode(t, err, ErrInvalidArgument, "dtype")
	i := must(NewTensorInt64([]int64{1}, 1))
	defer i.Close()
	_, err = i.Float32s()
	wantCode(t, err, ErrInvalidArgument, "float32")

	_, err = NewTensorInt64([]int64{1, 2, 3}, 2, 2)
	wantCode(t, err, ErrInvalidArgument, "data_size")
	_, err = NewTensorFloat32([]float32{1, 2, 3}, 2)
	wantCode(t, err, ErrInvalidArgument, "data_size")
	_, err = NewTensorInt64([]int64{}, -1)
	wantCode(t, err, ErrInvalidArgument, "negative")
	_, err = NewTensorInt32([]int32{1}, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	wantCode(t, err, ErrInvalidArgument, "")
	_, err = NewTensorInt64(nil, 1<<40, 1<<40)
	wantCode(t, err, ErrInvalidArgument, "")

	closed := must(NewTensorInt64([]int64{1}, 1))
	closed.Close()
	closed.Close() // idempotent
	_, err = closed.Shape()
	wantCode(t, err, ErrInvalidArgument, "")
	_, err = closed.Dtype()
	wantCode(t, err, ErrInvalidArgument, "")
	_, err = closed.Int64s()
	wantCode(t, err, ErrInvalidArgument, "")
	var none *Tensor
	_, err = none.NumBytes()
	wantCode(t, err, ErrInvalidArgument, "")
	none.Close()
}

// Objects never closed are released by their finalizers once the garbage collector finds
// them unreachable (Close is the rule; this is only the backstop).
func TestFinalizerBackstop(t *testing.T) {
	cfg := must(ConfigFromPreset("olmo2_1M", 64))
	defer cfg.Close()
	tensors, models := liveTensors.Load(), liveModels.Load()
	func() {
		for i := 0; i < 100; i++ {
			_ = must(NewTensorFloat32(make([]float32, 1024), 32, 32))
		}
		for i := 0; i < 5; i++ {
			m := must(NewModel(cfg, "cpu", nil))
			x := must(NewTensorInt64(ids(4, 64), 1, 4))
			_ = must(m.Forward(x, nil))
		}
	}()
	if liveTensors.Load() < tensors+100 || liveModels.Load() != models+5 {
		t.Fatalf("live tensors %d models %d", liveTensors.Load()-tensors, liveModels.Load()-models)
	}
	deadline := time.Now().Add(10 * time.Second)
	for liveTensors.Load() > tensors || liveModels.Load() > models {
		if time.Now().After(deadline) {
			t.Fatalf("finalizers left %d tensors and %d models", liveTensors.Load()-tensors, liveModels.Load()-models)
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
}
