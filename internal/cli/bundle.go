package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/remote"
)

func init() { register(newBundleCmd) }

func newBundleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bundle", Short: "Build and serve policy bundles for remote activation (CONFIG_FILE)"}
	cmd.AddCommand(newBundleBuildCmd(), newBundleServeCmd())
	return cmd
}

// newBundleBuildCmd writes a .tar.gz bundle the way `opa build -b` does, so
// that a signed bundle verifies in OPA and in acgs alike.
func newBundleBuildCmd() *cobra.Command {
	var out string
	var o remote.BuildOptions
	cmd := &cobra.Command{
		Use:   "build DIR",
		Short: "Write DIR as a .tar.gz bundle (signed with --signing-key)",
		Long: `Write the bundle directory DIR (Rego, data.json, .manifest) as a .tar.gz
bundle with OPA's compiler, as 'opa build -b DIR' does. With --signing-key the
bundle carries OPA's .signatures.json; services verify it with the public key
under "keys" and a "signing" block in their CONFIG_FILE. The output is written
atomically (temporary file, then rename), so a bundle server never serves half
of it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := remote.BuildFile(cmd.Context(), args[0], out, o); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "output", "o", "bundle.tar.gz", "output file")
	f.StringVar(&o.Revision, "revision", "", "manifest revision (default: the one in DIR/.manifest)")
	f.StringVar(&o.SigningKey, "signing-key", "", "PEM private key (or HMAC secret), or a file holding it, to sign the bundle")
	f.StringVar(&o.SigningAlg, "signing-alg", "", "JWT signing algorithm (default RS256)")
	f.StringVar(&o.KeyID, "signing-key-id", "", "key id written in the signature (optional)")
	f.StringArrayVar(&o.Ignore, "ignore", nil, "leave out files matching this shell pattern, e.g. '*_test.rego' (repeatable)")
	return cmd
}

// newBundleServeCmd is a small bundle server for local fleets
// (scripts/cluster.sh): static files with ETags and long polling.
func newBundleServeCmd() *cobra.Command {
	var addr string
	var maxWait time.Duration
	cmd := &cobra.Command{
		Use:   "serve DIR",
		Short: "Serve the bundles in DIR over HTTP for OPA-style polling and long polling",
		Long: `Serve the files in DIR (e.g. DIR/bundle.tar.gz at /bundle.tar.gz) to OPA
bundle downloaders: each response carries a content ETag, so pollers get 304
until the file changes, and a request with "Prefer: wait=N" (OPA long polling)
is held until the file changes or N seconds pass. Publish a new bundle by
writing it to a temporary file and renaming it ('acgs bundle build' does).
SIGTERM/SIGINT stop it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := os.Stat(args[0])
			if err != nil || !st.IsDir() {
				return fmt.Errorf("bundle directory %s: not a directory (%v)", args[0], err)
			}
			log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
			fsrv := &remote.FileServer{Dir: args[0], MaxWait: maxWait, Log: log}
			defer fsrv.Close()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--addr %s: %w", addr, err)
			}
			// Request contexts end with the server, so held long polls answer
			// (304) at shutdown instead of holding it up.
			base, stopRequests := context.WithCancel(context.Background())
			defer stopRequests()
			srv := &http.Server{Handler: fsrv, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute,
				BaseContext: func(net.Listener) context.Context { return base }}
			log.Info("serving bundles", "dir", args[0], "addr", ln.Addr().String())
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				return err
			case <-cmd.Context().Done():
			}
			stopRequests()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8181", "listen address")
	cmd.Flags().DurationVar(&maxWait, "max-wait", 60*time.Second, "longest long-poll hold, whatever the client asks")
	return cmd
}
