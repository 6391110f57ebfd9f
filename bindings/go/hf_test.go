package olm

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Llama-shaped: pre-norm blocks with Llama's RMSNorm, no QK-norm.
const llamaJSON = `{"d_model": 32, "vocab_size": 64, "n_layers": 2,
 "block": {"name": "default",
   "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false, "rope": {"theta": 10000, "full_precision": false}},
   "feed_forward": {"hidden_size": 96, "bias": false},
   "layer_norm": {"name": "qwen_rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "qwen_rms", "eps": 1e-6, "bias": false}, "bias": false}}`

func hfNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func hfLogits(t *testing.T, m *Model) []float32 {
	t.Helper()
	ids := make([]int64, 16)
	for i := range ids {
		ids[i] = int64((i*13 + 5) % 64)
	}
	in := must(NewTensorInt64(ids, 2, 8))
	defer in.Close()
	out := must(m.Forward(in, nil))
	defer out.Close()
	return must(out.Float32s())
}

func TestHFRoundTrip(t *testing.T) {
	cfg := must(ConfigFromJSON(llamaJSON))
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	dir := filepath.Join(t.TempDir(), "llama")
	opts := DefaultHFSaveOptions()
	if opts.MaxShardBytes != 5<<30 || opts.Dtype != ConfigDtype || opts.BOSTokenID != -1 {
		t.Fatalf("save defaults %+v", opts)
	}
	opts.MaxShardBytes = 10000
	opts.EOSTokenID = 2
	if err := m.SaveHFDir(dir, &opts); err != nil {
		t.Fatal(err)
	}
	config := string(must(os.ReadFile(filepath.Join(dir, "config.json"))))
	if !strings.Contains(config, `"LlamaForCausalLM"`) || !strings.Contains(config, `"eos_token_id": 2`) {
		t.Fatalf("config.json: %s", config)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors.index.json")); err != nil {
		t.Fatal(err)
	}

	back := must(ModelFromHFDir(dir, nil))
	defer back.Close()
	if !reflect.DeepEqual(hfLogits(t, back), hfLogits(t, m)) {
		t.Fatal("logits differ after the round trip")
	}
	lo := DefaultHFLoadOptions()
	lo.Dtype = BFloat16
	bf := must(ModelFromHFDir(dir, &lo))
	defer bf.Close()
	if p := must(bf.Parameters()); p[0].Dtype != BFloat16 {
		t.Fatalf("dtype %v", p[0].Dtype)
	}
	c := must(ConfigFromHFDir(dir, nil))
	defer c.Close()
	if js := must(c.JSON()); !strings.Contains(js, "qwen_rms") {
		t.Fatalf("config %s", js)
	}
	wantCode(t, m.SaveHFDir(dir, nil), ErrInvalidArgument, "not an empty directory")
}

func TestHFBadDirectories(t *testing.T) {
	cfg := must(ConfigFromJSON(llamaJSON))
	defer cfg.Close()
	m := must(NewModel(cfg, "cpu", nil))
	defer m.Close()
	dir := filepath.Join(t.TempDir(), "m")
	if err := m.SaveHFDir(dir, nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.json")
	good := string(must(os.ReadFile(path)))

	hfNoErr(t, os.WriteFile(path, []byte(strings.Replace(good, "LlamaForCausalLM", "BloomForCausalLM", 1)), 0o644))
	_, err := ModelFromHFDir(dir, nil)
	wantCode(t, err, ErrInvalidConfig, "BloomForCausalLM")

	hfNoErr(t, os.WriteFile(path, []byte(strings.Replace(good, `"num_hidden_layers": 2`, `"num_hidden_layers": 3`, 1)), 0o644))
	_, err = ModelFromHFDir(dir, nil)
	wantCode(t, err, ErrMismatch, "model.layers.2.")

	hfNoErr(t, os.WriteFile(path, []byte(good), 0o644))
	hfNoErr(t, os.Remove(filepath.Join(dir, "model.safetensors")))
	_, err = ModelFromHFDir(dir, nil)
	wantCode(t, err, ErrIO, "model.safetensors")

	_, err = ConfigFromHFDir(filepath.Join(dir, "nowhere"), nil)
	wantCode(t, err, ErrIO, "config.json")
}
