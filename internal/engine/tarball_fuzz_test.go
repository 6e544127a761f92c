package engine

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/acgs-lite/acgs/policies"
)

const fuzzHash = "cdd01ef066bc6cf2"

// fuzzBundleLimit is the per-file and whole-archive bound used by the fuzz
// target: small, so that an oversize seed and its mutants cost a megabyte,
// not MaxBundleBytes, per execution.
const fuzzBundleLimit = 1 << 20

// tarEntry is one member of a hand-made archive.
type tarEntry struct {
	name     string
	body     string
	typ      byte // tar.TypeReg when zero
	link     string
	declared int64 // header size when > 0 (may differ from len(body))
}

// makeTar writes entries as an (uncompressed) tar stream. A declared size
// larger than the body leaves the archive short, as an attacker would.
func makeTar(tb testing.TB, entries []tarEntry) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: e.typ, Linkname: e.link, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
			if e.declared > 0 {
				h.Size = e.declared
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatalf("tar header %s: %v", e.name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				tb.Fatalf("tar body %s: %v", e.name, err)
			}
		}
		if e.declared > int64(len(e.body)) {
			return buf.Bytes() // cut short: no padding, no end-of-archive
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// policyEntries is the embedded constitution as archive members, as it is
// deployed (its Rego tests left out: they double the fuzzer's parse time).
func policyEntries(tb testing.TB) []tarEntry {
	tb.Helper()
	var out []tarEntry
	for p, b := range testenv.ConstitutionFiles(tb, nil) {
		out = append(out, tarEntry{name: "/" + p, body: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name }) // stable archives
	return out
}

func manifest(hash, rev string) tarEntry {
	m := map[string]any{"revision": rev, "roots": []string{"acgs", "x"}}
	if hash != "" {
		m["metadata"] = map[string]any{"constitutional_hash": hash}
	}
	b, _ := json.Marshal(m)
	return tarEntry{name: "/.manifest", body: string(b)}
}

// tarballSeeds are the hostile and ordinary archives every run starts from,
// named for the table test; raw seeds are tar streams the harness gzips.
func tarballSeeds(tb testing.TB) []struct {
	name string
	data []byte
	wrap bool
} {
	tb.Helper()
	policy := policyEntries(tb)
	rego := "package x\n\np := 1\n"
	type seed = struct {
		name string
		data []byte
		wrap bool
	}
	var seeds []seed
	add := func(name string, entries []tarEntry) {
		seeds = append(seeds, seed{name, makeTar(tb, entries), true})
	}
	add("real policies", policy)
	seeds = append(seeds, seed{"real policies gzipped", gzipBytes(makeTar(tb, policy)), false})
	add("traversal passwd", append([]tarEntry{manifest(fuzzHash, "t"), {name: "../../etc/passwd", body: "root:x:0:0::/root:/bin/sh\n"}}, policy[1:]...))
	add("traversal rego", []tarEntry{manifest(fuzzHash, "t"), {name: "../../x/evil.rego", body: rego}})
	add("traversal data", []tarEntry{manifest(fuzzHash, "t"), {name: "x/../../../data.json", body: `{"x":{"a":1}}`}})
	add("absolute paths", []tarEntry{manifest(fuzzHash, "t"), {name: "/etc/passwd", body: "root"}, {name: "/x/abs.rego", body: rego}})
	add("symlink", []tarEntry{manifest(fuzzHash, "t"), {name: "x/link.rego", typ: tar.TypeSymlink, link: "/etc/passwd"}, {name: "x/p.rego", body: rego}})
	add("hardlink", []tarEntry{manifest(fuzzHash, "t"), {name: "x/hard.rego", typ: tar.TypeLink, link: "../../etc/shadow"}, {name: "x/p.rego", body: rego}})
	add("device and fifo", []tarEntry{manifest(fuzzHash, "t"), {name: "x/dev", typ: tar.TypeChar}, {name: "x/fifo", typ: tar.TypeFifo}, {name: "x/p.rego", body: rego}})
	add("oversize file", []tarEntry{manifest(fuzzHash, "t"), {name: "x/data.json", body: `{"a":"` + strings.Repeat("a", fuzzBundleLimit) + `"}`}})
	add("declared huge size", []tarEntry{manifest(fuzzHash, "t"), {name: "x/p.rego", body: rego, declared: 1 << 40}})
	add("declared size over limit", []tarEntry{manifest(fuzzHash, "t"), {name: "x/p.rego", body: rego, declared: fuzzBundleLimit + 1}})
	var many []tarEntry
	many = append(many, manifest(fuzzHash, "t"))
	for i := 0; i < 5; i++ {
		many = append(many, tarEntry{name: "x/d" + string(rune('a'+i)) + "/data.json", body: `"` + strings.Repeat("z", fuzzBundleLimit/4) + `"`})
	}
	add("many files over the total", many)
	add("wrong hash", []tarEntry{manifest("ffffffffffffffff", "t"), {name: "x/p.rego", body: rego}})
	add("missing hash", []tarEntry{manifest("", "t"), {name: "x/p.rego", body: rego}})
	add("no manifest", []tarEntry{{name: "x/p.rego", body: rego}})
	add("bad rego", []tarEntry{manifest(fuzzHash, "t"), {name: "x/p.rego", body: "package x\np := \n"}})
	add("bad data", []tarEntry{manifest(fuzzHash, "t"), {name: "x/data.json", body: `{"a":`}})
	add("data outside roots", []tarEntry{manifest(fuzzHash, "t"), {name: "y/data.json", body: `{"a":1}`}})
	add("duplicate entries", []tarEntry{manifest(fuzzHash, "t"), manifest("ffffffffffffffff", "u"), {name: "x/p.rego", body: rego}, {name: "x/p.rego", body: "package x\np := 2\n"}})
	add("signatures without keys", []tarEntry{manifest(fuzzHash, "t"), {name: "/.signatures.json", body: `{"signatures":["e30.e30.e30"]}`}, {name: "x/p.rego", body: rego}})
	add("empty archive", nil)
	full := gzipBytes(makeTar(tb, policy))
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 512)
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	seeds = append(seeds,
		seed{"gzip garbage", garbage, false},
		seed{"gzip header only", full[:10], false},
		seed{"gzip truncated", full[:len(full)/2], false},
		seed{"gzip bad checksum", append(append([]byte(nil), full[:len(full)-8]...), 0, 0, 0, 0, 0, 0, 0, 0), false},
		seed{"gzip of non-tar", gzipBytes([]byte(`{"not":"a tar"}`)), false},
		seed{"gzip bomb", gzipBytes(makeTar(tb, []tarEntry{manifest(fuzzHash, "t"), {name: "x/data.json", body: `"` + strings.Repeat("0", 4*fuzzBundleLimit) + `"`}})), false},
		seed{"empty input", nil, false},
	)
	return seeds
}

// FuzzReadTarball throws .tar.gz bytes (wrap=false) or tar streams the
// harness compresses (wrap=true, so the fuzzer reaches the tar layer instead
// of dying on gzip checksums) at the bundle reader and activates whatever
// loads: nothing may panic, no module may sit outside the bundle, and a
// bundle whose manifest lacks the configured constitutional hash is refused.
func FuzzReadTarball(f *testing.F) {
	for _, s := range tarballSeeds(f) {
		f.Add(s.data, s.wrap)
	}
	e, err := New(context.Background(), FSSource{FS: policies.FS, Name: "embedded"}, Options{
		// Partial evaluation off: plan building quadruples the cost of
		// activating the real constitution, and plans have their own tests.
		ConstitutionalHash: fuzzHash, EvalTimeout: 50 * time.Millisecond, Logger: discardLogger(),
	})
	if err != nil {
		f.Fatal(err)
	}
	input := map[string]any{"type": "constitutional_evaluation", "constitutional_hash": fuzzHash, "action": "data.read_public"}
	f.Fuzz(func(t *testing.T, data []byte, wrap bool) {
		if wrap {
			data = gzipBytes(data)
		}
		b, err := readTarball(bytes.NewReader(data), "fuzz.tar.gz", fuzzBundleLimit, nil)
		if err != nil {
			return
		}
		total := 0
		for _, m := range b.Modules {
			total += len(m.Raw)
			if escapes(m.Path) {
				t.Fatalf("module path %q escapes the bundle", m.Path)
			}
		}
		if total > fuzzBundleLimit {
			t.Fatalf("loaded %d bytes of modules, more than the %d-byte limit", total, fuzzBundleLimit)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = e.Activate(ctx, b, "fuzz")
		got, _ := b.Manifest.Metadata["constitutional_hash"].(string)
		if err == nil && got != fuzzHash {
			t.Fatalf("activated a bundle whose manifest hash is %q", got)
		}
		if err == nil {
			_, _ = e.Decide(ctx, "acgs/main/decision", input)
			_, _ = e.Decide(ctx, "x", input)
		}
	})
}

// escapes reports whether a bundle path leaves the bundle root once cleaned.
func escapes(p string) bool {
	p = filepath.ToSlash(p)
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return true
		}
	}
	return false
}

// TestReadTarballHostileArchives runs the seeds as a table with the real
// limits' logic at the fuzz bound: which archives load, which are refused.
func TestReadTarballHostileArchives(t *testing.T) {
	e, err := New(context.Background(), FSSource{FS: policies.FS, Name: "embedded"}, Options{
		ConstitutionalHash: fuzzHash, EvalTimeout: time.Second, Logger: discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	// load: the reader accepts it; activate: activation succeeds too.
	want := map[string]struct{ load, activate bool }{
		"real policies":             {true, true},
		"real policies gzipped":     {true, true},
		"traversal passwd":          {true, true}, // not a bundle file: ignored, and nothing is ever extracted to disk
		"traversal rego":            {false, false},
		"traversal data":            {true, true}, // OPA files it under the bundle root (data.x), inside the declared roots
		"absolute paths":            {true, true}, // OPA roots every path at the bundle root: /x/abs.rego is x/abs.rego
		"symlink":                   {true, true}, // links are skipped, never followed
		"hardlink":                  {true, true},
		"device and fifo":           {true, true},
		"oversize file":             {false, false},
		"declared huge size":        {false, false},
		"declared size over limit":  {false, false},
		"many files over the total": {false, false},
		"wrong hash":                {true, false},
		"missing hash":              {true, false},
		"no manifest":               {true, false},
		"bad rego":                  {false, false},
		"bad data":                  {false, false},
		"data outside roots":        {false, false},
		"duplicate entries":         {false, false},
		"signatures without keys":   {false, false}, // a signed bundle is refused when no key is configured
		"empty archive":             {true, false},
		"gzip garbage":              {false, false},
		"gzip header only":          {false, false},
		"gzip truncated":            {false, false},
		"gzip bad checksum":         {false, false},
		"gzip of non-tar":           {false, false},
		"gzip bomb":                 {false, false},
		"empty input":               {false, false},
	}
	for _, s := range tarballSeeds(t) {
		t.Run(s.name, func(t *testing.T) {
			w, ok := want[s.name]
			if !ok {
				t.Fatalf("seed %q has no expectation", s.name)
			}
			data := s.data
			if s.wrap {
				data = gzipBytes(data)
			}
			b, err := readTarball(bytes.NewReader(data), s.name, fuzzBundleLimit, nil)
			if (err == nil) != w.load {
				t.Fatalf("load error = %v, want load=%v", err, w.load)
			}
			if err != nil {
				return
			}
			for _, m := range b.Modules {
				if escapes(m.Path) {
					t.Fatalf("module path %q escapes the bundle", m.Path)
				}
			}
			err = e.Activate(context.Background(), b, s.name)
			if (err == nil) != w.activate {
				t.Fatalf("activate error = %v, want activate=%v", err, w.activate)
			}
		})
	}
}

// TestReadTarballDeclaredSizeIsBounded is the regression test for a tar
// header that declares a huge size: OPA's tarball loader preallocates the
// declared size unless the loader itself is given the limit, which took the
// process down (runtime: out of memory) on a 1 KiB archive.
func TestReadTarballDeclaredSizeIsBounded(t *testing.T) {
	data := gzipBytes(makeTar(t, []tarEntry{manifest(fuzzHash, "t"), {name: "x/p.rego", body: "package x\n", declared: 1 << 40}}))
	if _, err := ReadTarball(bytes.NewReader(data), "huge.tar.gz"); err == nil {
		t.Fatal("a member declaring 1 TiB was read")
	}
}

// TestReadTarballTotalIsBounded is the regression test for an archive of many
// members each under the per-file limit: MaxBundleBytes bounds the whole
// decompressed archive too, so 64 MiB of gzip cannot become gigabytes.
func TestReadTarballTotalIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 70 MiB archive")
	}
	var raw bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&raw, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	chunk := bytes.Repeat([]byte{' '}, 1<<20)
	for i := 0; i < 3; i++ { // 3 x 24 MiB members: each under the per-file limit, 72 MiB in all
		name := "x/d" + string(rune('a'+i)) + "/data.json"
		size := int64(24 << 20)
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte("1"))
		for w := int64(1); w < size; w += int64(len(chunk)) {
			n := min(int64(len(chunk)), size-w)
			_, _ = tw.Write(chunk[:n])
		}
	}
	_ = tw.Close()
	_ = zw.Close()
	_, err := ReadTarball(bytes.NewReader(raw.Bytes()), "many.tar.gz")
	if err == nil || !strings.Contains(err.Error(), "decompresses to more than") {
		t.Fatalf("a %d-byte archive of 72 MiB was read: %v", raw.Len(), err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestWriteTarballCorpus writes the seeds into testdata/fuzz/FuzzReadTarball
// in Go's corpus format when ACGS_WRITE_FUZZ_SEEDS=1. Seeds built from the
// live policies/ (and any over 16 KiB encoded) stay in f.Add only, so the
// committed corpus is small and does not churn with the constitution.
func TestWriteTarballCorpus(t *testing.T) {
	if os.Getenv("ACGS_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set ACGS_WRITE_FUZZ_SEEDS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReadTarball")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range tarballSeeds(t) {
		data, wrap := s.data, s.wrap
		if wrap && len(data) > 64<<10 {
			data, wrap = gzipBytes(data), false
		}
		name := strings.NewReplacer(" ", "_", "/", "_").Replace(s.name)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\n", data, wrap)
		if len(body) > 16<<10 {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadTarballTrailingBytes: bytes after the archive's last gzip member
// that are not another member are ignored, as OPA's own reader ignores
// them; a further member still counts towards the decompressed bound.
func TestReadTarballTrailingBytes(t *testing.T) {
	good := gzipBytes(makeTar(t, []tarEntry{manifest(fuzzHash, "t"), {name: "x/p.rego", body: "package x\np := 1\n"}}))
	bomb := gzipBytes(make([]byte, 2*fuzzBundleLimit))
	for _, tc := range []struct {
		name, tail string
		refused    string // "" when read
	}{
		{"none", "", ""},
		{"text", "junk", ""},
		{"zeros", strings.Repeat("\x00", 600), ""},
		{"a cut gzip header", string(good[:6]), ""},
		{"the archive again", string(good), ""},
		{"a member that decompresses past the bound", string(bomb), "decompresses to more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := append(append([]byte{}, good...), tc.tail...)
			_, err := readTarball(bytes.NewReader(data), "t.tar.gz", fuzzBundleLimit, nil)
			if tc.refused == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)) {
				t.Fatalf("got %v, want %q", err, tc.refused)
			}
			if tc.refused == "" {
				// OPA's reader, alone, reads the same bytes.
				if _, err := bundle.NewCustomReader(bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(data), "")).Read(); err != nil {
					t.Fatalf("OPA refuses it too: %v", err)
				}
			}
		})
	}
}
