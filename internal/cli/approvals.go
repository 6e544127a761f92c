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
	"strings"
	"text/tabwriter"
	"time"

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
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
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
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Agent, a.Tool,
					now.Sub(a.Created).Round(time.Second), a.Expires.Sub(now).Round(time.Second), shorten(string(args), 80))
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
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s (%s by agent %s, decision %s)\n", out.Approval.ID, out.Verdict, out.Approval.Tool, out.Approval.Agent, out.Approval.DecisionID)
			return nil
		},
	}
	cmd.Flags().StringVar(&by, "by", "", "who decides, recorded in the decision log (default $USER)")
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
			return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Code, e.Message)
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, shorten(string(b), 200))
	}
	return json.Unmarshal(b, out)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
