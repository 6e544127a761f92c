package engine

import (
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/acgs-lite/acgs/policies"
)

// constitutionFS is the built-in constitution as served (no Rego tests),
// in memory, for tests to edit.
func constitutionFS(tb testing.TB) fstest.MapFS {
	tb.Helper()
	out := fstest.MapFS{}
	err := fs.WalkDir(policies.Served, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(policies.Served, path)
		out[path] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// withoutDataHash is the constitution with its hash taken out of
// data.json (and the plan seed that reads it there, which resolves only
// against JSON data), for a rule to define it instead; extra files added.
func withoutDataHash(tb testing.TB, extra map[string]string) fstest.MapFS {
	tb.Helper()
	f := constitutionFS(tb)
	var cfg map[string]any
	if err := json.Unmarshal(f["acgs/config/data.json"].Data, &cfg); err != nil {
		tb.Fatal(err)
	}
	delete(cfg, "constitutional_hash")
	raw, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	f["acgs/config/data.json"] = &fstest.MapFile{Data: raw}
	seed := "#     input.constitutional_hash:\n#       - data: acgs.config.constitutional_hash\n"
	main := string(f["acgs/main.rego"].Data)
	if !strings.Contains(main, seed) {
		tb.Fatal("main.rego no longer seeds input.constitutional_hash from data")
	}
	f["acgs/main.rego"] = &fstest.MapFile{Data: []byte(strings.Replace(main, seed, "", 1))}
	for name, body := range extra {
		f[name] = &fstest.MapFile{Data: []byte(body)}
	}
	return f
}

// smallBundle is a bundle of roots acgs and t with the given files.
func smallBundle(files map[string]string) fstest.MapFS {
	f := fstest.MapFS{".manifest": {Data: []byte(`{"revision":"h1","roots":["acgs","t"],"metadata":{"constitutional_hash":"` + fuzzHash + `"}}`)}}
	for name, body := range files {
		f[name] = &fstest.MapFile{Data: []byte(body)}
	}
	return f
}

func activateFS(tb testing.TB, fsys fs.FS, name string) (*Engine, error) {
	tb.Helper()
	e, err := New(context.Background(), nil, Options{ConstitutionalHash: fuzzHash, EvalTimeout: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	b, err := FSSource{FS: fsys, Name: name}.Load(context.Background())
	if err != nil {
		tb.Fatalf("loading %s: %v", name, err)
	}
	return e, e.Activate(context.Background(), b, name)
}

// reader is a policy comparing requests with data.acgs.config.constitutional_hash.
const reader = "package acgs.main\ndecision := {\"allow\": input.constitutional_hash == data.acgs.config.constitutional_hash}\n"

// TestActivationRefusesVirtualHashes: a bundle is refused when a rule, not
// only data.json, makes a document named constitutional_hash hold another
// hash or a value that varies by request, when a document the policy reads
// as its hash is not the configured string, and when a hash-looking string
// other than the configured one is written under the key. Before, a rule
// package acgs.config / constitutional_hash := "deadbeefdeadbeef" in place
// of the data's hash activated, and the constitution then allowed requests
// carrying deadbeefdeadbeef.
func TestActivationRefusesVirtualHashes(t *testing.T) {
	for _, tc := range []struct {
		name string
		fsys func(testing.TB) fstest.MapFS
		want string // in the error
	}{
		{"rego complete rule in the constitution", func(tb testing.TB) fstest.MapFS {
			return withoutDataHash(tb, map[string]string{"acgs/config/hash.rego": "package acgs.config\nconstitutional_hash := \"deadbeefdeadbeef\"\n"})
		}, `data.acgs.config.constitutional_hash is "deadbeefdeadbeef", not the configured constitutional hash`},
		{"multi-part ref head", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/h.rego": "package acgs\nconfig.constitutional_hash := \"deadbeefdeadbeef\"\n"})
		}, `data.acgs.config.constitutional_hash is "deadbeefdeadbeef"`},
		{"rule in another package, not read", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"t/h.rego": "package t.x\nconstitutional_hash := \"deadbeefdeadbeef\"\n"})
		}, `data.t.x.constitutional_hash is "deadbeefdeadbeef"`},
		{"object-valued rule in the parent package, read", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/h.rego": "package acgs\nconfig := {k: \"deadbeefdeadbeef\" | some k in [\"constitutional_hash\"]}\n", "acgs/main.rego": reader})
		}, `data.acgs.config.constitutional_hash is "deadbeefdeadbeef"`},
		{"partial object rule, read", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/h.rego": "package acgs\nconfig[k] := \"deadbeefdeadbeef\" if some k in [\"x\", \"constitutional_hash\"]\n", "acgs/main.rego": reader})
		}, `data.acgs.config.constitutional_hash is "deadbeefdeadbeef"`},
		{"variable key deeper in a ref head", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"t/h.rego": "package t\ncfg[k].constitutional_hash := 7 if some k in [\"a\"]\n"})
		}, `data.t.cfg.a.constitutional_hash is 7 (a number, not a string)`},
		{"complete rule depending on input", func(tb testing.TB) fstest.MapFS {
			return withoutDataHash(tb, map[string]string{"acgs/config/hash.rego": "package acgs.config\nconstitutional_hash := input.constitutional_hash\n"})
		}, `data.acgs.config.constitutional_hash depends on the input (input.constitutional_hash)`},
		{"decision answering another hash", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/main.rego": "package acgs.main\ndecision := {\"allow\": true, \"constitutional_hash\": \"deadbeefdeadbeef\"} if input.x\n"})
		}, `holds "deadbeefdeadbeef" under constitutional_hash`},
		{"with replacing the hash by another", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{
				"acgs/config/data.json": `{"constitutional_hash": "` + fuzzHash + `"}`,
				"acgs/main.rego":        "package acgs.main\ninner := {\"allow\": input.constitutional_hash == data.acgs.config.constitutional_hash}\ndecision := d if d := inner with data.acgs.config.constitutional_hash as \"deadbeefdeadbeef\"\n",
			})
		}, `replaces data.acgs.config.constitutional_hash, which is, holds or is within data.acgs.config.constitutional_hash, with "deadbeefdeadbeef"`},
		{"a served rule reading a test package", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{
				"acgs/h_test.rego": "package acgs.helpers_test\nd := {\"allow\": input.x == 1, \"constitutional_hash\": \"deadbeefdeadbeef\"}\n",
				"acgs/main.rego":   "package acgs.main\ndecision := data.acgs.helpers_test.d\n",
			})
		}, `holds "deadbeefdeadbeef" under constitutional_hash`},
		{"with replacing the hash by the input", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{
				"acgs/config/data.json": `{"constitutional_hash": "` + fuzzHash + `"}`,
				"acgs/main.rego":        "package acgs.main\ninner := {\"allow\": input.constitutional_hash == data.acgs.config.constitutional_hash}\ndecision := d if d := inner with data.acgs.config.constitutional_hash as input.constitutional_hash\n",
			})
		}, `replaces data.acgs.config.constitutional_hash, which is, holds or is within data.acgs.config.constitutional_hash, with input.constitutional_hash`},
		{"with replacing a document holding the hash", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{
				"acgs/config/data.json": `{"constitutional_hash": "` + fuzzHash + `"}`,
				"acgs/main.rego":        "package acgs.main\ninner := {\"allow\": input.constitutional_hash == data.acgs.config.constitutional_hash}\ndecision := d if d := inner with data.acgs.config as input.cfg\n",
			})
		}, `replaces data.acgs.config, which is, holds or is within data.acgs.config.constitutional_hash, with input.cfg`},
		{"ref head depending on input, value not fixed", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/h.rego": "package acgs\nresults[i].constitutional_hash := input.h if some i, _ in input.batch\n"})
		}, `data.acgs.results depends on the input`},
		{"non-deterministic", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/h.rego": "package acgs.config\nconstitutional_hash := \"" + fuzzHash + "\" if time.now_ns() > 0\n"})
		}, `data.acgs.config.constitutional_hash depends on non-deterministic built-ins (time.now_ns)`},
		{"conflict", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/h.rego": "package acgs.config\nconstitutional_hash := h if some h in [\"" + fuzzHash + "\", \"deadbeefdeadbeef\"]\n"})
		}, `data.acgs.config.constitutional_hash cannot be evaluated without input`},
		{"does not end", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/h.rego": "package acgs.config\nconstitutional_hash := \"" + fuzzHash + "\" if count([x | some x in numbers.range(1, 100000000); x % 7 == 0]) > 0\n"})
		}, `did not end within`},
		{"JSON array, read", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": ["deadbeefdeadbeef"]}`, "acgs/main.rego": reader})
		}, `data.acgs.config.constitutional_hash is ["deadbeefdeadbeef"] (an array (or set), not a string)`},
		{"JSON number, read", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": 12}`, "acgs/main.rego": reader})
		}, `data.acgs.config.constitutional_hash is 12 (a number, not a string)`},
		{"JSON object, read", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": {"v": "` + fuzzHash + `"}}`, "acgs/main.rego": reader})
		}, `data.acgs.config.constitutional_hash is {"v":"` + fuzzHash + `"} (an object, not a string)`},
		{"JSON null, read", func(testing.TB) fstest.MapFS {
			return smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": null}`, "acgs/main.rego": reader})
		}, `data.acgs.config.constitutional_hash is null (not a string)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := activateFS(t, tc.fsys(t), tc.name)
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %q, got %v", tc.want, err)
			}
		})
	}
}

// TestActivationAcceptsVirtualHashes: the constitution (with and without
// its Rego tests), the constitution with its hash defined by a rule rather
// than data.json, and keys spelled otherwise activate; the Rego-defined
// hash is the one requests are compared with.
func TestActivationAcceptsVirtualHashes(t *testing.T) {
	safe := map[string]any{"type": "constitutional_evaluation", "constitutional_hash": fuzzHash, "action": "data.read_public",
		"context": map[string]any{"agent": map[string]any{"trust_level": json.Number("0.9")}, "environment": map[string]any{"sandbox_enabled": true, "audit_enabled": true}, "responsible_party": "u", "explanation": "e"}}
	for _, tc := range []struct {
		name   string
		fsys   fs.FS
		decide bool
	}{
		{"the constitution", policies.Served, true},
		{"the constitution with its tests", policies.FS, true},
		{"hash defined by a rule", withoutDataHash(t, map[string]string{"acgs/config/hash.rego": "package acgs.config\nconstitutional_hash := \"" + fuzzHash + "\"\n"}), true},
		{"hash defined by a rule from other data", withoutDataHash(t, map[string]string{"acgs/config/hash.rego": "package acgs.config\nconstitutional_hash := data.acgs.hashes.current\n", "acgs/hashes/data.json": `{"current": "` + fuzzHash + `"}`}), true},
		// Undefined holds no other hash (the policy then denies every request).
		{"hash undefined", withoutDataHash(t, map[string]string{"acgs/config/hash.rego": "package acgs.config\nconstitutional_hash := data.acgs.hashes.none\n"}), false},
		{"keys spelled otherwise", smallBundle(map[string]string{
			"t/data.json": `{"constitutionalHash": 1, "constitutional_hash_v2": ["x"]}`,
			"t/p.rego":    "package t\nConstitutional_hash := 1\nx := {\"constitutional_Hash\": input.h}\n",
		}), false},
		{"input-dependent number keys", smallBundle(map[string]string{"t/p.rego": "package t\nf[i] := i * input.k if some i in numbers.range(0, 9)\n"}), false},
		// Valid bundles a wider version of the check refused (second review):
		{"partial object over the input", smallBundle(map[string]string{"t/p.rego": "package t\nby_id[id] := r if { some r in input.resources; id := r.id }\n"}), false},
		{"decision from a helper rule", smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": "` + fuzzHash + `"}`,
			"acgs/main.rego": "package acgs.main\nhash := data.acgs.config.constitutional_hash\ndecision := {\"allow\": input.x == 1, \"constitutional_hash\": hash}\n"}), false},
		{"decision from a function", smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": "` + fuzzHash + `"}`,
			"acgs/main.rego": "package acgs.main\nmk(ok, h) := {\"allow\": ok, \"constitutional_hash\": h}\ndecision := mk(input.x == 1, data.acgs.config.constitutional_hash)\n"}), false},
		{"decision wrapping another", smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": "` + fuzzHash + `"}`,
			"acgs/inner.rego": "package acgs.inner\ndecision := {\"allow\": input.x == 1, \"constitutional_hash\": data.acgs.config.constitutional_hash}\n",
			"acgs/main.rego":  "package acgs.main\ndecision := {\"allow\": d.allow, \"constitutional_hash\": d.constitutional_hash} if d := data.acgs.inner.decision\n"}), false},
		{"audit record reading the decision's hash", smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": "` + fuzzHash + `"}`,
			"acgs/main.rego": "package acgs.main\ndecision := {\"allow\": input.x == 1, \"constitutional_hash\": data.acgs.config.constitutional_hash}\nrecord := {\"hash\": data.acgs.main.decision.constitutional_hash}\n"}), false},
		{"ref heads depending on input, value fixed", smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": "` + fuzzHash + `"}`,
			"acgs/main.rego": "package acgs.main\nresults[i].constitutional_hash := data.acgs.config.constitutional_hash if some i, _ in input.batch\ndecision.constitutional_hash := \"" + fuzzHash + "\" if input.type == \"t\"\n"}), false},
		{"tests in the policy's package", smallBundle(map[string]string{"acgs/config/data.json": `{"constitutional_hash": "` + fuzzHash + `"}`,
			"acgs/main.rego": "package acgs.main\ndecision := {\"allow\": input.constitutional_hash == data.acgs.config.constitutional_hash}\n" +
				"test_mismatch if not decision.allow with input.constitutional_hash as \"deadbeefdeadbeef\"\n" +
				"test_mismatch_object if not decision.allow with input as {\"constitutional_hash\": \"deadbeefdeadbeef\"}\n"}), false},
		{"schemas", smallBundle(map[string]string{"t/data.json": `{"input_schema": {"constitutional_hash": {"type": "string"}}}`,
			"t/p.rego": "package t\nrequired_types := {\"constitutional_hash\": \"string\"}\n"}), false},
		// Partial objects keyed by the input's strings are common; one whose
		// hash no reference reads holds none the policy compares with (a
		// second review: such bundles were refused).
		{"partial object depending on input, its hash not read", smallBundle(map[string]string{"t/p.rego": "package t\nviolations[k] := v if some k, v in input.cfg\n"}), false},
		{"two rules under one key, one from the input", smallBundle(map[string]string{"t/p.rego": "package t\no.a[k] := v if { some x in input.xs; k := x.k; v := x.v }\no.a.a := 1.0\n"}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := activateFS(t, tc.fsys, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.decide {
				return
			}
			d, err := e.Decide(context.Background(), "acgs/main/decision", safe)
			if err != nil || d.Result.(map[string]any)["allow"] != true || d.Result.(map[string]any)["constitutional_hash"] != fuzzHash {
				t.Fatalf("the configured hash is not allowed: %+v %v", d.Result, err)
			}
			other := map[string]any{}
			for k, v := range safe {
				other[k] = v
			}
			other["constitutional_hash"] = "deadbeefdeadbeef"
			d, err = e.Decide(context.Background(), "acgs/main/decision", other)
			if err != nil || d.Result.(map[string]any)["allow"] != false {
				t.Fatalf("another hash is allowed: %+v %v", d.Result, err)
			}
		})
	}
}
