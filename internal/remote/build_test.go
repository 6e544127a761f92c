package remote_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/acgs-lite/acgs/internal/remote"
)

// TestBuild checks that built bundles read back with OPA's reader: the
// manifest's metadata kept, the revision overridden on request, and a
// signed bundle verifying with its public key and only with it.
func TestBuild(t *testing.T) {
	priv, pub := keyPair(t, 0)
	_, otherPub := keyPair(t, 1)
	dir := constitutionDir(t, "from-manifest", hash, nil)
	verify := func(pub string) *bundle.VerificationConfig {
		return bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{"k": {Key: pub, Algorithm: "RS256"}}, "k", "", nil)
	}
	for _, tc := range []struct {
		name    string
		opts    remote.BuildOptions
		verify  *bundle.VerificationConfig
		wantRev string
		wantErr string // from reading back ("" = reads fine)
	}{
		{"unsigned", remote.BuildOptions{}, nil, "from-manifest", ""},
		{"revision override", remote.BuildOptions{Revision: "v42"}, nil, "v42", ""},
		{"signed", remote.BuildOptions{SigningKey: priv, Revision: "s1"}, verify(pub), "s1", ""},
		{"signed, wrong key", remote.BuildOptions{SigningKey: priv}, verify(otherPub), "", "verification error"},
		{"unsigned, signature required", remote.BuildOptions{}, verify(pub), "", "missing .signatures.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := remote.Build(context.Background(), dir, &buf, tc.opts); err != nil {
				t.Fatal(err)
			}
			r := bundle.NewReader(bytes.NewReader(buf.Bytes()))
			if tc.verify != nil {
				r = r.WithBundleVerificationConfig(tc.verify)
			}
			b, err := r.Read()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("read error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Manifest.Revision != tc.wantRev {
				t.Errorf("revision %q, want %q", b.Manifest.Revision, tc.wantRev)
			}
			if h := b.Manifest.Metadata["constitutional_hash"]; h != hash {
				t.Errorf("metadata.constitutional_hash %v, want %s", h, hash)
			}
			if len(b.Modules) == 0 || b.Data["acgs"] == nil {
				t.Errorf("bundle lost its content: %d modules, data %v", len(b.Modules), b.Data)
			}
			if signed := len(b.Signatures.Signatures) > 0; signed != (tc.opts.SigningKey != "") {
				t.Errorf("signed = %v, want %v", signed, tc.opts.SigningKey != "")
			}
		})
	}
}

// TestBuildRefuses checks inputs Build must refuse.
func TestBuildRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, dir string
		opts      remote.BuildOptions
		want      string
	}{
		{"missing directory", "/nonexistent/acgs-bundle", remote.BuildOptions{}, "no such file"},
		{"algorithm without key", constitutionDir(t, "x", hash, nil), remote.BuildOptions{SigningAlg: "RS256"}, "need --signing-key"},
		{"broken Rego", constitutionDir(t, "x", hash, map[string]string{"acgs/broken.rego": "package acgs.broken\n\nallow if {"}), remote.BuildOptions{}, "broken.rego"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := remote.Build(context.Background(), tc.dir, &bytes.Buffer{}, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestBuildIgnore checks --ignore leaves matching files out, and that paths
// in the archive are relative to the bundle root.
func TestBuildIgnore(t *testing.T) {
	dir := constitutionDir(t, "i", hash, map[string]string{"acgs/extra_test.rego": "package acgs.extra_test\n\ntest_ok if true\n"})
	for _, tc := range []struct {
		ignore   []string
		wantTest bool
	}{
		{nil, true},
		{[]string{"*_test.rego"}, false},
	} {
		var buf bytes.Buffer
		if err := remote.Build(context.Background(), dir, &buf, remote.BuildOptions{Ignore: tc.ignore}); err != nil {
			t.Fatal(err)
		}
		b, err := bundle.NewReader(&buf).Read()
		if err != nil {
			t.Fatal(err)
		}
		hasTest := false
		for _, m := range b.Modules {
			if strings.HasSuffix(m.Path, "_test.rego") {
				hasTest = true
			}
			if !strings.HasPrefix(m.Path, "/acgs/") {
				t.Errorf("module path %q is not relative to the bundle root", m.Path)
			}
		}
		if hasTest != tc.wantTest {
			t.Errorf("ignore %v: test module present = %v, want %v", tc.ignore, hasTest, tc.wantTest)
		}
	}
}
