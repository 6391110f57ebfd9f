package olm

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestConfigPresetNumbers(t *testing.T) {
	cfg := must(ConfigFromPreset("olmo2_30M", 16384))
	defer cfg.Close()
	total, nonEmb, err := cfg.NumParams()
	if err != nil || total != 11800832 || nonEmb != 7606528 {
		t.Fatalf("num params %d %d %v (OLMo-core: 11800832 7606528)", total, nonEmb, err)
	}
	// OLMo-core 3.x's Transformer.num_flops_per_token: 6 per parameter without the
	// embeddings and the blocks' own norms, plus 12 * n_heads * head_dim for each causal
	// (query, key) pair, averaged over the sequence.
	var fields struct {
		DModel  int64 `json:"d_model"`
		NLayers int64 `json:"n_layers"`
	}
	if err := json.Unmarshal([]byte(must(cfg.JSON())), &fields); err != nil || fields.DModel != 256 || fields.NLayers != 4 {
		t.Fatalf("config JSON: %v %+v", err, fields)
	}
	if got := must(cfg.NumFlopsPerToken(256)); got != 47205888 {
		t.Fatalf("flops per token at 256: %d, OLMo-core gives 47205888", got)
	}
	blockNorms := 2 * fields.NLayers * fields.DModel
	for _, seq := range []int64{1, 2, 100, 4096} {
		want := 6*(nonEmb-blockNorms) + fields.NLayers*(12*fields.DModel*(seq*(seq+1)/2)/seq)
		if got := must(cfg.NumFlopsPerToken(seq)); got != want {
			t.Fatalf("flops per token at %d: %d, want %d", seq, got, want)
		}
	}
	_, err = cfg.NumFlopsPerToken(0)
	wantCode(t, err, ErrInvalidArgument, "seq_len")

	small := must(ConfigFromPreset("olmo2_1M", 64))
	defer small.Close()
	total, _ = must2(t)(small.NumParams())
	m := must(NewModel(small, "cpu", nil))
	defer m.Close()
	if got := must(m.NumParams()); got != total {
		t.Fatalf("model has %d parameters, config counts %d", got, total)
	}
}

func TestConfigRoundTrips(t *testing.T) {
	cfg := must(ConfigFromPreset("olmo2_30M", 16384))
	defer cfg.Close()
	text := must(cfg.JSON())
	if !json.Valid([]byte(text)) {
		t.Fatalf("invalid JSON %q", text)
	}
	again := must(ConfigFromJSON(text))
	defer again.Close()
	if must(again.JSON()) != text {
		t.Fatal("JSON round trip changed the text")
	}
	fb := must(cfg.FlatBuffer())
	if len(fb) < 8 || string(fb[4:8]) != "OLMC" {
		t.Fatalf("FlatBuffer without the OLMC identifier: % x", fb[:8])
	}
	fromFB := must(ConfigFromFlatBuffer(fb))
	defer fromFB.Close()
	if string(must(fromFB.FlatBuffer())) != string(fb) || must(fromFB.JSON()) != text {
		t.Fatal("FlatBuffer round trip changed the config")
	}
	tiny := must(ConfigFromJSON(tinyJSON))
	defer tiny.Close()
	if total, _ := must2(t)(tiny.NumParams()); total <= 0 {
		t.Fatalf("tiny config params %d", total)
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := ConfigFromPreset("olmo9_1T", 100)
	wantCode(t, err, ErrInvalidArgument, "olmo2_30M")
	_, err = ConfigFromPreset("olmo2_1M", 0)
	wantCode(t, err, ErrInvalidArgument, "vocab_size")
	_, err = ConfigFromJSON(`{"d_model": 8,`)
	wantCode(t, err, ErrParse, "")
	_, err = ConfigFromJSON("")
	wantCode(t, err, ErrParse, "")
	_, err = ConfigFromJSON(strings.Replace(tinyJSON, `"n_layers": 2`, `"n_layers": 2, "bogus": 1`, 1))
	wantCode(t, err, ErrParse, "bogus")
	_, err = ConfigFromJSON(strings.Replace(tinyJSON, `"n_layers": 2`, `"n_layers": "two"`, 1))
	wantCode(t, err, ErrParse, "")
	_, err = ConfigFromJSON(strings.Replace(tinyJSON, `"d_model": 32`, `"d_model": 30`, 1))
	wantCode(t, err, ErrInvalidConfig, "d_model")
	_, err = ConfigFromFlatBuffer([]byte("not a flatbuffer at all"))
	wantCode(t, err, ErrParse, "FlatBuffer")
	_, err = ConfigFromFlatBuffer(nil)
	wantCode(t, err, ErrParse, "")

	// A closed or nil config is a NULL handle to the library: an error, not a crash.
	cfg := must(ConfigFromPreset("olmo2_1M", 64))
	cfg.Close()
	cfg.Close() // idempotent
	_, err = cfg.JSON()
	wantCode(t, err, ErrInvalidArgument, "")
	_, _, err = cfg.NumParams()
	wantCode(t, err, ErrInvalidArgument, "")
	var none *Config
	_, err = none.FlatBuffer()
	wantCode(t, err, ErrInvalidArgument, "")
	none.Close()
	_, err = NewModel(none, "cpu", nil)
	wantCode(t, err, ErrInvalidArgument, "")
}

func must2(t *testing.T) func(a, b int64, err error) (int64, int64) {
	return func(a, b int64, err error) (int64, int64) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}
