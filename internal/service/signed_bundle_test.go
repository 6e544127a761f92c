package service_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/service"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
)

// TestSignedLocalBundle: a bundle signed by `acgs bundle build
// --signing-key` given as POLICY_BUNDLE_PATH is verified with
// POLICY_BUNDLE_VERIFICATION_KEY (the PEM itself or a file holding it), or
// read unverified with POLICY_BUNDLE_SKIP_VERIFY, as `opa run
// --verification-key` / `--skip-verify` do. Without either, or with
// another key, it is refused at start; an unsigned bundle is refused when a
// key is given. It was refused whatever was set (review: "verification key
// not provided", and no setting to give one).
func TestSignedLocalBundle(t *testing.T) {
	priv, pub := signingKeys(t)
	_, otherPub := signingKeys(t)
	signedDir, unsignedDir := t.TempDir(), t.TempDir()
	publishConstitution(t, signedDir, "signed-1", testHash, priv)
	publishConstitution(t, unsignedDir, "unsigned-1", testHash, "")
	signed, unsigned := filepath.Join(signedDir, "bundle.tar.gz"), filepath.Join(unsignedDir, "bundle.tar.gz")
	keyFile := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(keyFile, []byte(pub), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		bundle string
		set    func(*config.Config)
		want   string // the revision served, or "" when refused
		refuse string // in the refusal
	}{
		{"key as PEM", signed, func(c *config.Config) { c.Policy.VerificationKey = pub }, "signed-1", ""},
		{"key in a file", signed, func(c *config.Config) { c.Policy.VerificationKey = keyFile }, "signed-1", ""},
		{"skip verification", signed, func(c *config.Config) { c.Policy.SkipVerify = true }, "signed-1", ""},
		{"no key", signed, func(*config.Config) {}, "", "verification key not provided"},
		{"another key", signed, func(c *config.Config) { c.Policy.VerificationKey = otherPub }, "", "verif"},
		{"unsigned with a key", unsigned, func(c *config.Config) { c.Policy.VerificationKey = pub }, "", ".signatures.json"},
		{"unsigned without a key", unsigned, func(*config.Config) {}, "unsigned-1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := func(c *config.Config) {
				c.Policy.BundlePath = tc.bundle
				tc.set(c)
			}
			if tc.want == "" {
				cfg := config.Default()
				set(&cfg)
				if err := cfg.Validate(); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				svc, err := service.New(ctx, cfg, service.Options{LogOutput: io.Discard})
				if err == nil {
					svc.Close()
					t.Fatal("started")
				}
				if !strings.Contains(err.Error(), tc.refuse) {
					t.Fatalf("refused with %v, want %q in it", err, tc.refuse)
				}
				return
			}
			in := servicetest.Start(t, set)
			if inf, ok := in.Service.Engine.Info(); !ok || inf.Revision != tc.want {
				t.Fatalf("revision %q (active %v), want %q", inf.Revision, ok, tc.want)
			}
		})
	}
}
