package olm

import (
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The global batch of a step: 4 instances of 8 tokens; rank r of w takes its contiguous part.
func distBatch(step int) []int64 {
	out := make([]int64, 32)
	for i := range out {
		out[i] = (int64(i)*7 + int64(step)*13 + 3) % 64
	}
	return out
}

// FSDP: the same numbers with parameters and optimizer state sharded over the ranks.
const fsdpJSON = `, "data_parallel": {"name": "fsdp"}`

// Tensor parallelism: both ranks take the whole batch and hold half of every split matrix.
const tpJSON = `, "tensor_parallel": {"degree": 2}`

func distTrain(t *testing.T, d *Dist, rank, world int, extra string) []float64 {
	tcfg := must(TrainConfigFromJSON(trainJSON(extra)))
	defer tcfg.Close()
	cfg := must(tcfg.Model())
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	tr := must(NewTrainer(m, tcfg))
	defer tr.Close()
	if d != nil {
		if err := tr.SetDist(d); err != nil {
			t.Fatal(err)
		}
		if extra == fsdpJSON {
			// Sharded parameters: every rank saves its pieces (a collective, into a folder
			// both ranks share: the one holding their result files).
			saved, err := tr.SaveCheckpoint(filepath.Join(filepath.Dir(os.Getenv("OLM_GO_DIST_OUT")), "fsdp-checkpoints"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(saved, fmt.Sprintf("rank%d.safetensors", rank))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The ranks of one tensor-parallel group take the same part of each global batch.
	layout := must(tr.Layout())
	if d == nil && layout != (TrainerLayout{0, 1, 0, 1, 0, 1}) {
		t.Fatalf("one process: layout %+v", layout)
	}
	if extra == tpJSON && layout != (TrainerLayout{0, 1, int64(rank), 2, 0, 1}) {
		t.Fatalf("rank %d under tensor parallelism 2: layout %+v", rank, layout)
	}
	if extra != tpJSON && layout.DataParallelSize != int64(world) {
		t.Fatalf("data parallelism over %d ranks: layout %+v", world, layout)
	}
	part, per := int(layout.DataParallelRank), 32/int(layout.DataParallelSize)
	var losses []float64
	for s := 0; s < 4; s++ {
		x := must(NewTensorInt64(distBatch(s)[part*per:(part+1)*per], int64(per/8), 8))
		m := must(tr.Step(x, nil))
		x.Close()
		losses = append(losses, m.Loss)
	}
	return losses
}

// TestDistWorker is one rank; it runs only when TestDistTwoRanksMatchOneProcess launched it.
func TestDistWorker(t *testing.T) {
	out := os.Getenv("OLM_GO_DIST_OUT")
	if out == "" {
		t.Skip("launched by TestDistTwoRanksMatchOneProcess")
	}
	o := DefaultDistOptions()
	o.Backend = DistGloo
	o.TimeoutSeconds = 30
	d := must(NewDist(o))
	defer d.Close()
	info := must(d.Info())
	losses := distTrain(t, d, int(info.Rank), int(info.WorldSize), os.Getenv("OLM_GO_DIST_EXTRA"))
	sum := must(NewTensorFloat32([]float32{float32(info.Rank) + 1}, 1))
	defer sum.Close()
	if err := d.AllReduceSum(sum); err != nil {
		t.Fatal(err)
	}
	if v := must(sum.Float32s()); v[0] != 3 {
		t.Fatalf("all-reduce gave %v", v)
	}
	if err := d.Shutdown(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range losses {
		lines = append(lines, strconv.FormatFloat(l, 'g', 17, 64))
	}
	if err := os.WriteFile(out, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Two ranks (this test binary, relaunched) reproduce the single-process losses of the same
// global batches to 1e-5 relative (the same float32 terms, summed in another order).
func TestDistTwoRanksMatchOneProcess(t *testing.T) { distTwoRanks(t, "") }

func TestDistFSDPTwoRanksMatchOneProcess(t *testing.T) { distTwoRanks(t, fsdpJSON) }

func TestDistTensorParallelTwoRanksMatchOneProcess(t *testing.T) { distTwoRanks(t, tpJSON) }

func distTwoRanks(t *testing.T, extra string) {
	if os.Getenv("OLM_GO_DIST_OUT") != "" {
		t.Skip("inside a rank")
	}
	dir := t.TempDir()
	port := strconv.Itoa(freePort(t))
	var cmds []*exec.Cmd
	for r := 0; r < 2; r++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDistWorker$", "-test.count=1")
		cmd.Env = append(os.Environ(), "OLM_GO_DIST_OUT="+filepath.Join(dir, fmt.Sprintf("rank%d.txt", r)),
			"RANK="+strconv.Itoa(r), "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", "MASTER_PORT="+port, "OLM_GO_DIST_EXTRA="+extra)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	done := make(chan error, len(cmds))
	for _, c := range cmds {
		go func(c *exec.Cmd) { done <- c.Wait() }(c)
	}
	timeout := time.After(120 * time.Second)
	for range cmds {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("a rank failed: %v", err)
			}
		case <-timeout:
			for _, c := range cmds {
				c.Process.Kill()
			}
			t.Fatal("the ranks did not finish in time")
		}
	}
	want := distTrain(t, nil, 0, 1, "")
	for r := 0; r < 2; r++ {
		text := must(os.ReadFile(filepath.Join(dir, fmt.Sprintf("rank%d.txt", r))))
		got := strings.Split(string(text), "\n")
		if len(got) != len(want) {
			t.Fatalf("rank %d: %d losses", r, len(got))
		}
		for s, g := range got {
			v := must(strconv.ParseFloat(g, 64))
			if math.Abs(v-want[s]) > 1e-5*math.Abs(want[s]) {
				t.Errorf("rank %d step %d: loss %v, one process %v", r, s+1, v, want[s])
			}
		}
	}
}

func TestDistMissingRankIsNamed(t *testing.T) {
	if os.Getenv("OLM_GO_DIST_OUT") != "" {
		t.Skip("inside a rank")
	}
	o := DefaultDistOptions()
	o.Rank, o.WorldSize = 0, 2
	o.MasterAddr, o.MasterPort = "127.0.0.1", int32(freePort(t))
	o.TimeoutSeconds = 1
	_, err := NewDist(o)
	wantCode(t, err, ErrDistributed, "rank 1 of world_size 2 never arrived")
	o.Rank = 2
	_, err = NewDist(o)
	wantCode(t, err, ErrInvalidArgument, "rank 2")
	var closed *Dist
	wantCode(t, closed.Barrier(), ErrInvalidArgument, "dist")
	closed.Close()
}

// Issue #12: device strings and rank ranges are checked before any rendezvous, naming the field.
func TestDistBadOptionsAreNamed(t *testing.T) {
	if os.Getenv("OLM_GO_DIST_OUT") != "" {
		t.Skip("inside a rank")
	}
	for _, device := range []string{"gpu", "cuda:x", "", "cuda:-1"} {
		o := DefaultDistOptions()
		o.Rank, o.WorldSize = 0, 1
		o.Device = device
		_, err := NewDist(o)
		wantCode(t, err, ErrInvalidArgument, "options.device")
	}
	o := DefaultDistOptions()
	o.Rank, o.WorldSize = 0, 1<<20+1
	_, err := NewDist(o)
	wantCode(t, err, ErrInvalidArgument, "options.world_size")
	o = DefaultDistOptions()
	o.Rank, o.WorldSize = 0, 1
	o.LocalRank, o.LocalWorldSize = 2, 2
	_, err = NewDist(o)
	wantCode(t, err, ErrInvalidArgument, "options.local_rank")
}
