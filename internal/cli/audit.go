package cli

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/telemetry"
)

func init() { register(newAuditCmd) }

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit verify FILE",
		Short: "Check a hash-chained decision log (acgs gateway's) for removed, edited or inserted records",
	}
	var from, head string
	var asJSON bool
	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "Verify the hash chain of a decision log: exit 0 when intact, 1 naming each broken link",
		Long: `Verify the hash chain of a decision log written by 'acgs gateway' (every
record carries prev_hash, the SHA-256 of the line before it). A removed record
breaks the link of the record after it, an edited record too, an inserted one
its own. A cut at the very end is found only against a head recorded elsewhere
(--head; the gateway logs the head when it stops). For a file that continues
a rotated one, give the previous file's head as --from.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			rep, err := telemetry.VerifyChain(f, telemetry.VerifyChainOptions{From: from, Head: head})
			if err != nil {
				return fmt.Errorf("reading %s: %w", args[0], err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintf(out, "%s:%d: %s\n", args[0], p.Line, p.Reason)
				}
				if rep.Records == 0 {
					// A log closed before its first decision, or a file
					// emptied: only --head tells them apart.
					fmt.Fprintf(out, "%s: the file has no records: its head is where the chain starts (--from, or the genesis hash)\n", args[0])
				}
				if rep.OK() {
					fmt.Fprintf(out, "%s: intact: %d records, head %s\n", args[0], rep.Records, rep.Head)
				} else {
					fmt.Fprintf(out, "%s: BROKEN: %d problem(s) in %d records\n", args[0], len(rep.Problems), rep.Records)
				}
			}
			if !rep.OK() {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	verify.Flags().StringVar(&from, "from", "", "prev_hash the first record must carry (the previous file's head; default: the chain's genesis)")
	verify.Flags().StringVar(&head, "head", "", "hash the log must end at (a head recorded elsewhere), to find records cut from the end")
	verify.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.AddCommand(verify)
	return cmd
}
