package olm

/*
#include <stdlib.h>
#include <olm.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// DistBackend selects a process group's communication backend.
type DistBackend int32

const (
	// DistAuto picks nccl for a CUDA device and gloo otherwise.
	DistAuto DistBackend = C.OLM_DIST_AUTO
	DistGloo DistBackend = C.OLM_DIST_GLOO
	DistNccl DistBackend = C.OLM_DIST_NCCL
)

// DistOptions configures NewDist. Start from DefaultDistOptions, whose unset fields (-1, "", 0) are read from the launcher's environment
// (torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, or
// Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID).
type DistOptions struct {
	Backend        DistBackend
	Device         string // "cpu" or "cuda[:N]"; picks the backend for DistAuto
	Rank           int64  // -1: from the environment
	WorldSize      int64  // -1: from the environment
	LocalRank      int64  // -1: from the environment
	LocalWorldSize int64  // -1: from the environment
	MasterAddr     string // "": MASTER_ADDR, else 127.0.0.1
	MasterPort     int32  // 0: MASTER_PORT, else 29500
	TimeoutSeconds float64
}

// DefaultDistOptions takes everything from the environment, with a 300 s timeout.
func DefaultDistOptions() DistOptions {
	return DistOptions{Backend: DistAuto, Device: "cpu", Rank: -1, WorldSize: -1, LocalRank: -1,
		LocalWorldSize: -1, TimeoutSeconds: 300}
}

// DistInfo is this process's place in a process group.
type DistInfo struct {
	Rank, WorldSize, LocalRank, LocalWorldSize int64
	Backend                                    DistBackend
	Collectives, Bytes                         int64
}

// Dist is a c10d process group (Gloo on CPU, NCCL on CUDA); one per process. Close it.
type Dist struct {
	c *C.olm_dist
}

func (d *Dist) ptr() *C.olm_dist {
	if d == nil {
		return nil
	}
	return d.c
}

// NewDist joins a process group; every rank calls it with the same world size and address.
// A rank that never arrives makes the others fail with ErrDistributed naming it.
func NewDist(o DistOptions) (*Dist, error) {
	var opts C.olm_dist_options
	C.olm_dist_options_init_sized(&opts, C.sizeof_olm_dist_options)
	opts.backend = C.olm_dist_backend(o.Backend)
	device := C.CString(o.Device)
	defer C.free(unsafe.Pointer(device))
	opts.device = device
	opts.rank = C.int64_t(o.Rank)
	opts.world_size = C.int64_t(o.WorldSize)
	opts.local_rank = C.int64_t(o.LocalRank)
	opts.local_world_size = C.int64_t(o.LocalWorldSize)
	if o.MasterAddr != "" {
		addr := C.CString(o.MasterAddr)
		defer C.free(unsafe.Pointer(addr))
		opts.master_addr = addr
	}
	opts.master_port = C.int32_t(o.MasterPort)
	opts.timeout_seconds = C.double(o.TimeoutSeconds)
	var out *C.olm_dist
	if err := takeError(C.olm_dist_create(&opts, &out)); err != nil {
		return nil, err
	}
	d := &Dist{c: out}
	runtime.SetFinalizer(d, (*Dist).Close)
	return d, nil
}

// Info reports rank, world size, backend and communication counters.
func (d *Dist) Info() (DistInfo, error) {
	var i C.olm_dist_info
	i.struct_size = C.size_t(unsafe.Sizeof(i))
	err := takeError(C.olm_dist_info_get(d.ptr(), &i))
	runtime.KeepAlive(d)
	if err != nil {
		return DistInfo{}, err
	}
	return DistInfo{Rank: int64(i.rank), WorldSize: int64(i.world_size), LocalRank: int64(i.local_rank),
		LocalWorldSize: int64(i.local_world_size), Backend: DistBackend(i.backend),
		Collectives: int64(i.collectives), Bytes: int64(i.bytes)}, nil
}

// Barrier waits for every rank.
func (d *Dist) Barrier() error {
	err := takeError(C.olm_dist_barrier(d.ptr()))
	runtime.KeepAlive(d)
	return err
}

// AllReduceSum sums a float32 or int64 CPU tensor over all ranks, in place.
func (d *Dist) AllReduceSum(t *Tensor) error {
	err := takeError(C.olm_dist_all_reduce_sum(d.ptr(), t.ptr()))
	runtime.KeepAlive(d)
	runtime.KeepAlive(t)
	return err
}

// Shutdown leaves the group cleanly: a final barrier, then the connections close.
func (d *Dist) Shutdown() error {
	err := takeError(C.olm_dist_shutdown(d.ptr()))
	runtime.KeepAlive(d)
	return err
}

// Close releases the handle (a trainer using the group keeps it alive). Safe to call twice and on nil; it
// always returns nil (the C release functions cannot fail): every handle is an io.Closer.
func (d *Dist) Close() error {
	if d != nil && d.c != nil {
		C.olm_dist_free(d.c)
		d.c = nil
		runtime.SetFinalizer(d, nil)
	}
	return nil
}

// TrainerLayout is where a rank sits in its trainer's device mesh (Trainer.Layout).
type TrainerLayout struct {
	// Which of the global batch's DataParallelSize parts Step takes (the ranks of one tensor-
	// or context-parallel group take the same); 0 of 1 alone.
	DataParallelRank, DataParallelSize int64
	// This rank's place in its tensor-parallel group (0 of 1 without one).
	TensorParallelRank, TensorParallelSize int64
	// This rank's place in its context-parallel group (0 of 1 without one).
	ContextParallelRank, ContextParallelSize int64
}

// Layout reports where this rank sits in the device mesh the train config's tensor_parallel
// and context_parallel sections lay out over the process group.
func (t *Trainer) Layout() (TrainerLayout, error) {
	var l C.olm_trainer_layout
	l.struct_size = C.size_t(unsafe.Sizeof(l))
	err := takeError(C.olm_trainer_layout_get(t.ptr(), &l))
	runtime.KeepAlive(t)
	if err != nil {
		return TrainerLayout{}, err
	}
	return TrainerLayout{DataParallelRank: int64(l.data_parallel_rank), DataParallelSize: int64(l.data_parallel_size),
		TensorParallelRank: int64(l.tensor_parallel_rank), TensorParallelSize: int64(l.tensor_parallel_size),
		ContextParallelRank: int64(l.context_parallel_rank), ContextParallelSize: int64(l.context_parallel_size)}, nil
}

// SetDist makes the trainer train data-parallel over a process group (every rank calls it;
// rank 0's weights are broadcast). Step then takes this rank's part of the global batch and
// Fit gives each rank its slice. nil detaches. From then on the trainer issues collectives on
// the group during its calls: the trainer and the group are one object for threading (do
// not call Barrier, AllReduceSum or Shutdown while the trainer works in another goroutine).
func (t *Trainer) SetDist(d *Dist) error {
	err := takeError(C.olm_trainer_set_dist(t.ptr(), d.ptr()))
	runtime.KeepAlive(t)
	runtime.KeepAlive(d)
	return err
}
