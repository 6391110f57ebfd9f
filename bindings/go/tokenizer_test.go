package olm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// trainTokenizer trains a byte-fallback BPE SentencePiece model with an identity normalizer
// (lossless) into a temporary directory with Debian's spm_train.
func trainTokenizer(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var corpus []byte
	for _, name := range []string{"computers", "science"} {
		b, err := os.ReadFile("/usr/share/games/fortunes/" + name)
		if err != nil {
			t.Fatal(err)
		}
		corpus = append(corpus, b...)
	}
	if err := os.WriteFile(filepath.Join(dir, "corpus.txt"), corpus, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("spm_train", "--input="+filepath.Join(dir, "corpus.txt"), "--model_prefix="+filepath.Join(dir, "tok"),
		"--vocab_size=500", "--model_type=bpe", "--byte_fallback=true", "--normalization_rule_name=identity",
		"--remove_extra_whitespaces=false", "--minloglevel=2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("spm_train: %v\n%s", err, out)
	}
	return filepath.Join(dir, "tok.model")
}

var tokenizerTexts = []string{"Hello world", "", "  runs   of\tspaces\n", "Café 😀 日本", "func main() { fmt.Println(42) }"}

func TestTokenizerEncodeDecode(t *testing.T) {
	tok := must(LoadTokenizer(trainTokenizer(t)))
	defer tok.Close()
	for _, text := range tokenizerTexts {
		ids := must(tok.Encode(text, false))
		if (len(ids) == 0) != (text == "") {
			t.Fatalf("%q: ids %v", text, ids)
		}
		if got := must(tok.Decode(ids, false)); got != text {
			t.Fatalf("round trip %q -> %q", text, got)
		}
		with := must(tok.Encode(text, true))
		if with[0] != 1 || !reflect.DeepEqual(with[1:], ids) {
			t.Fatalf("%q: with special tokens %v, without %v", text, with, ids)
		}
		if got := must(tok.Decode(with, false)); got != "<s>"+text {
			t.Fatalf("decode keeping specials: %q", got)
		}
		if got := must(tok.Decode(with, true)); got != text {
			t.Fatalf("decode skipping specials: %q", got)
		}
	}
	// EncodeInto: exact and too small (the error names the count, the buffer is untouched).
	want := must(tok.Encode(tokenizerTexts[3], true))
	buf := make([]int32, len(want)+2)
	n := must(tok.EncodeInto(tokenizerTexts[3], true, buf))
	if !reflect.DeepEqual(buf[:n], want) {
		t.Fatalf("EncodeInto %v, want %v", buf[:n], want)
	}
	small := []int32{-7}
	_, err := tok.EncodeInto(tokenizerTexts[3], true, small)
	wantCode(t, err, ErrInvalidArgument, fmt.Sprintf("the text has %d ids", len(want)))
	if small[0] != -7 {
		t.Fatal("a too small buffer was written")
	}
	// Invalid UTF-8 names the byte offset; an id outside the vocabulary its index.
	_, err = tok.Encode("ok\xff", false)
	wantCode(t, err, ErrInvalidArgument, "text: not UTF-8 at byte offset 2")
	_, err = tok.Decode([]int32{5, 500}, false)
	wantCode(t, err, ErrInvalidArgument, "ids[1]: 500")
}

func TestTokenizerBatchAndConcurrency(t *testing.T) {
	tok := must(LoadTokenizer(trainTokenizer(t)))
	defer tok.Close()
	var many []string
	for i := 0; i < 200; i++ {
		many = append(many, tokenizerTexts[i%len(tokenizerTexts)]+strings.Repeat("x", i%23))
	}
	batch := must(tok.EncodeBatch(many, true))
	if len(batch) != len(many) {
		t.Fatalf("%d results for %d texts", len(batch), len(many))
	}
	for i, text := range many {
		if !reflect.DeepEqual(batch[i], must(tok.Encode(text, true))) {
			t.Fatalf("text %d differs", i)
		}
	}
	if empty := must(tok.EncodeBatch(nil, false)); len(empty) != 0 {
		t.Fatalf("empty batch %v", empty)
	}
	_, err := tok.EncodeBatch([]string{"fine", "bad\xc3"}, false)
	wantCode(t, err, ErrInvalidArgument, "texts[1]: not UTF-8 at byte offset 3")
	// One tokenizer, many goroutines.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				text := many[(i*7+g)%len(many)]
				got, err := tok.Encode(text, true)
				if err != nil || !reflect.DeepEqual(got, batch[(i*7+g)%len(many)]) {
					errs <- fmt.Errorf("goroutine %d: %v %v", g, got, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestTokenizerLookups(t *testing.T) {
	tok := must(LoadTokenizer(trainTokenizer(t)))
	if size := must(tok.VocabSize()); size != 500 {
		t.Fatalf("vocab size %d", size)
	}
	if s := must(tok.SpecialIDs()); s != (SpecialIDs{BOS: 1, EOS: 2, PAD: -1, UNK: 0}) {
		t.Fatalf("special ids %+v", s)
	}
	if id, ok, err := tok.TokenToID("</s>"); err != nil || !ok || id != 2 {
		t.Fatalf("TokenToID(</s>) = %d %v %v", id, ok, err)
	}
	if _, ok, err := tok.TokenToID("no such token"); err != nil || ok {
		t.Fatalf("an unknown token was found: %v", err)
	}
	for id := int32(0); id < 500; id++ {
		if back, ok, _ := tok.TokenToID(must(tok.IDToToken(id))); !ok || back != id {
			t.Fatalf("id %d -> %d", id, back)
		}
	}
	_, err := tok.IDToToken(500)
	wantCode(t, err, ErrInvalidArgument, "id: 500")
	tok.Close()
	tok.Close()
	_, err = tok.Encode("x", false)
	wantCode(t, err, ErrInvalidArgument, "tokenizer")
	_, err = LoadTokenizer("/nonexistent/tokenizer.model")
	wantCode(t, err, ErrIO, "/nonexistent/tokenizer.model")
}

// A Hugging Face directory: tests/tokenizer/fixtures/bpe_template (its README has the ids,
// the tokenizers package's).
func TestTokenizerHuggingFaceDirectory(t *testing.T) {
	tok := must(LoadTokenizer("../../tests/tokenizer/fixtures/bpe_template"))
	defer tok.Close()
	for _, c := range []struct {
		text    string
		special bool
		want    []int32
	}{{"abc ab", true, []int32{5, 4, 3}}, {"abc ab", false, []int32{4, 3}}, {"abc ab</s>", true, []int32{5, 4, 3, 6}},
		{"ca d", false, []int32{2, 0, 7}}, {"  ab\tc ", true, []int32{5, 3, 2}}} {
		if got := must(tok.Encode(c.text, c.special)); !reflect.DeepEqual(got, c.want) {
			t.Fatalf("Encode(%q, %v) = %v, want %v", c.text, c.special, got, c.want)
		}
	}
	if got := must(tok.Decode([]int32{5, 4, 3}, true)); got != "abc ab" {
		t.Fatalf("decode skipping specials: %q", got)
	}
	if got := must(tok.Decode([]int32{5, 4, 3}, false)); got != "<s> abc ab" {
		t.Fatalf("decode keeping specials: %q", got)
	}
	ids := must(tok.SpecialIDs())
	if ids.BOS != 5 || ids.EOS != 6 || ids.PAD != -1 {
		t.Fatalf("special ids %+v", ids)
	}
}
