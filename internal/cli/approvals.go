package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/gateway"
)

func init() { register(newApprovalsCmd) }

// approvalsClient talks to the admin API of a running gateway.
type approvalsClient struct {
	url, token string
	timeout    time.Duration
}

func newApprovalsCmd() *cobra.Command {
	c := &approvalsClient{}
	cmd := &cobra.Command{
		Use:   "approvals list|approve ID|deny ID",
		Short: "List, approve or refuse the tool calls an acgs gateway holds for approval",
		Long: `List, approve or refuse the tool calls a running 'acgs gateway' holds because
the constitution's answer was approval_required. A held call that is not
approved within the gateway's approvals.timeout is denied.

The gateway's admin API must be listening (admin.listen in its configuration)
and the token must be one of its admin tokens (ADMIN_TOKEN by default).`,
	}
	defURL := os.Getenv("ACGS_GATEWAY_ADMIN_URL")
	if defURL == "" {
		defURL = "http://127.0.0.1:8096"
	}
	cmd.PersistentFlags().StringVar(&c.url, "url", defURL, "the gateway's admin URL (env ACGS_GATEWAY_ADMIN_URL)")
	cmd.PersistentFlags().StringVar(&c.token, "token", "", "admin bearer token (default: env ADMIN_TOKEN, its first token)")
	cmd.PersistentFlags().DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline of the request")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the calls waiting for approval, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out gateway.ApprovalList
			if err := c.do(cmd.Context(), http.MethodGet, gateway.ApprovalsPath, nil, &out); err != nil {
				return err
			}
			if asJSON {
				b, err := json.MarshalIndent(out, "", "  ")
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(append(jsonPrintable(b), '\n'))
				return err
			}
			if len(out.Approvals) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no calls are waiting for approval")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAGENT\tTOOL\tWAITING\tEXPIRES IN\tARGUMENTS")
			now := time.Now()
			for _, a := range out.Approvals {
				args, _ := json.Marshal(a.Arguments)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", printable(a.ID), printable(a.Agent), printable(a.Tool),
					now.Sub(a.Created).Round(time.Second), a.Expires.Sub(now).Round(time.Second), shorten(printable(string(args)), 80))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON (arguments in full, reasons, decision ids)")
	cmd.AddCommand(list, c.resolveCmd("approve", "Approve a held call: the gateway forwards it"), c.resolveCmd("deny", "Refuse a held call: the agent gets a tool error with the note"))
	return cmd
}

func (c *approvalsClient) resolveCmd(action, short string) *cobra.Command {
	var by, note string
	cmd := &cobra.Command{
		Use:   action + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if by == "" {
				by = os.Getenv("USER")
			}
			var out gateway.ApprovalResult
			body, _ := json.Marshal(gateway.ApprovalRequest{By: by, Note: note})
			if err := c.do(cmd.Context(), http.MethodPost, gateway.ApprovalsPath+"/"+url.PathEscape(args[0])+"/"+action, body, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s (%s by agent %s, decision %s)\n", printable(out.Approval.ID), printable(string(out.Verdict)),
				printable(out.Approval.Tool), printable(out.Approval.Agent), printable(out.Approval.DecisionID))
			return nil
		},
	}
	cmd.Flags().StringVar(&by, "by", "", "who decides, recorded in the decision log as given, beside the admin token's position and fingerprint (default $USER)")
	cmd.Flags().StringVar(&note, "note", "", "why; a refusal's note is sent to the agent")
	return cmd
}

func (c *approvalsClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	tok := c.token
	if tok == "" {
		tok, _, _ = strings.Cut(os.Getenv("ADMIN_TOKEN"), ",")
		tok = strings.TrimSpace(tok)
	}
	if tok == "" {
		return fmt.Errorf("no admin token: pass --token or set ADMIN_TOKEN")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.url, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the gateway's admin API at %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Code, Message string }
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, printable(e.Code), printable(e.Message))
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, printable(resp.Status), shorten(printable(string(b)), 200))
	}
	return json.Unmarshal(b, out)
}

// shorten cuts s to at most n bytes, "..." included, at a character's
// start (a character cut in two would print as another, or as garbage).
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// printable escapes what a terminal would act on rather than show, as Go
// quotes strings (\r, \t, \x1b, \u009b, \u202e, \xff for a byte that is not
// UTF-8): control characters, C1 controls, format characters such as the
// bidirectional overrides, and invalid bytes. The tool names, arguments and
// agents it prints are an agent's (or an upstream's) choice: unescaped, an
// agent could move the cursor and rewrite the row an approver reads before
// approving it. A tab would also shift the table's columns.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && w == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+w])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += w
	}
	return b.String()
}

// jsonPrintable escapes, as JSON \u escapes, the characters printable
// escapes that JSON encoding leaves as they are (C1 controls, format
// characters); the JSON means the same. Outside strings JSON holds only
// printable ASCII and the indentation's line breaks.
func jsonPrintable(b []byte) []byte {
	clean := true
	for _, r := range string(b) {
		if r != '\n' && !strconv.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for _, r := range string(b) {
		switch {
		case r == '\n' || strconv.IsPrint(r):
			out = utf8.AppendRune(out, r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
	}
	return out
}
