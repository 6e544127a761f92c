package cli

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/telemetry"
)

func init() { register(newAuditCmd) }

// Exit codes of acgs audit verify.
const (
	auditBroken    = 1 // the log was checked and problems were found
	auditCannotRun = 2 // the log could not be checked: a usage error, a file that cannot be read
)

// cannotCheck is verify's answer when it could not check the log.
func cannotCheck(err error) error { return &ExitError{Code: auditCannotRun, Err: err} }

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit verify FILE",
		Short: "Check a hash-chained decision log (acgs gateway's) for removed, edited or inserted records",
	}
	var from, head, checkpoint string
	var maxLine int
	var asJSON bool
	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "Verify the hash chain of a decision log: exit 0 when intact, 1 naming each broken link, 2 when it cannot check",
		Long: `Verify the hash chain of a decision log written by 'acgs gateway' (every
record carries prev_hash, the SHA-256 of the line before it). A removed record
breaks the link of the record after it, an edited record too, an inserted one
its own. A cut at the very end is found only against a head recorded elsewhere:
--head, the hash the log must end at (the gateway logs it when it stops), or
--checkpoint, the head checkpoint the gateway keeps beside the log (FILE.head:
the head, and the file's size there, replaced at most once a second and when
it stops). With --checkpoint the line ending at that size must hash to that
head, as the gateway checks when it opens the file again; records after it
are not a problem but are named as not covered by the checkpoint (written
after it by a gateway killed before it could stop, or still being written).
For a file that continues a rotated one, give the previous file's head as
--from. Heads are "sha256:" and 64 lowercase hex digits, as verify prints them.

Verify a closed or rotated file: the last line of a log being written may be
caught half-written, and reported as torn.

A line longer than --max-line-bytes (64 MiB) is not held: it is hashed as it
is read, so the links to and past it are checked, and its own link is read
from its end (where the log writes prev_hash), but it is not read as a
record, and reported as not checked.

Exit status: 0 the chain is intact; 1 problems were found (each is printed);
2 the log could not be checked (a usage error, a --head or --from that is not
a head, a --checkpoint that cannot be read or is not a checkpoint, a file
that cannot be read), or could not be checked whole: its only problems are
lines longer than --max-line-bytes.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.ExactArgs(1)(cmd, args); err != nil {
				return cannotCheck(err)
			}
			for _, fl := range []struct{ name, value string }{{"head", head}, {"from", from}} {
				if cmd.Flags().Changed(fl.name) && !telemetry.IsChainHash(fl.value) {
					return cannotCheck(fmt.Errorf("--%s %q is not a head: want \"sha256:\" and 64 lowercase hex digits, as verify prints a head (the chain's genesis is %s)", fl.name, fl.value, telemetry.ChainGenesis))
				}
			}
			if maxLine < 1024 {
				return cannotCheck(fmt.Errorf("--max-line-bytes %d: want at least 1024", maxLine))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o := telemetry.VerifyChainOptions{From: from, Head: head, MaxLineBytes: maxLine}
			if cmd.Flags().Changed("checkpoint") {
				c, ok, err := telemetry.ReadHeadCheckpoint(checkpoint)
				switch {
				case err != nil:
					return cannotCheck(fmt.Errorf("--checkpoint: %w", err))
				case !ok:
					return cannotCheck(fmt.Errorf("--checkpoint %s: no such file", checkpoint))
				}
				o.Checkpoint = &c
			}
			f, err := os.Open(args[0])
			if err != nil {
				return cannotCheck(err)
			}
			defer f.Close()
			rep, err := telemetry.VerifyChain(f, o)
			if err != nil {
				return cannotCheck(fmt.Errorf("reading %s: %w", args[0], err))
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return cannotCheck(err)
				}
			} else {
				for _, p := range rep.Problems {
					if p.Line == 0 { // a file with no lines: the problem is the file's
						fmt.Fprintf(out, "%s: %s\n", args[0], p.Reason)
						continue
					}
					fmt.Fprintf(out, "%s:%d: %s\n", args[0], p.Line, p.Reason)
				}
				if rep.Records == 0 {
					// A log closed before its first decision, or a file
					// emptied: only --head tells them apart.
					fmt.Fprintf(out, "%s: the file has no records: its head is where the chain starts (--from, or the genesis hash)\n", args[0])
				}
				if rep.PastCheckpoint > 0 {
					after := fmt.Sprintf("after line %d", rep.CheckpointLine)
					if rep.CheckpointLine == 0 {
						after = "all of them: the checkpoint is of the file empty"
					}
					fmt.Fprintf(out, "%s: note: the last %d record(s) (%s) are not covered by the head checkpoint: written after its last replacement by a log killed before it could close, or still being written\n", args[0], rep.PastCheckpoint, after)
				}
				switch {
				case rep.OK():
					fmt.Fprintf(out, "%s: intact: %d records, head %s\n", args[0], rep.Records, rep.Head)
				case len(rep.Problems) == rep.Unchecked:
					fmt.Fprintf(out, "%s: NOT CHECKED WHOLE: %d line(s) longer than --max-line-bytes in %d records, no other problem\n", args[0], rep.Unchecked, rep.Records)
				default:
					fmt.Fprintf(out, "%s: BROKEN: %d problem(s) in %d records\n", args[0], len(rep.Problems), rep.Records)
				}
			}
			switch {
			case rep.OK():
				return nil
			case len(rep.Problems) == rep.Unchecked:
				// Nothing found, but not everything could be looked at:
				// not a verdict of tampering.
				return &ExitError{Code: auditCannotRun}
			}
			return &ExitError{Code: auditBroken}
		},
	}
	verify.Flags().StringVar(&from, "from", "", "prev_hash the first record must carry (the previous file's head; default: the chain's genesis)")
	verify.Flags().StringVar(&head, "head", "", "hash the log must end at (a head recorded elsewhere: the close line), to find records cut from the end")
	verify.Flags().StringVar(&checkpoint, "checkpoint", "", "head checkpoint file (FILE.head) whose head the log must hold at its size, to find records cut from the end; records after it are noted, not errors")
	verify.Flags().IntVar(&maxLine, "max-line-bytes", telemetry.DefaultMaxLineBytes, "longest line read as a record; a longer one is hashed, not held, and reported as not checked")
	verify.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	verify.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cannotCheck(err) })
	cmd.AddCommand(verify)
	return cmd
}
