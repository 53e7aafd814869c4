package main

// Credential helpers in the protocols tools already speak: a Kubernetes
// client-go exec plugin and a docker credential helper.

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/internal/wirejson"
)

var execCredentialCommand = &command{
	name: "exec-credential", args: "[--api-version VERSION] [--min-valid DURATION] [--variant NAME] NAME|GUID",
	summary: "a kubectl (client-go) exec credential plugin answering with the token",
	help: "Print the integration's token as a Kubernetes ExecCredential, for a\n" +
		"kubeconfig user's exec plugin:\n" +
		"  users:\n" +
		"  - name: me\n" +
		"    user:\n" +
		"      exec:\n" +
		"        apiVersion: client.authentication.k8s.io/v1\n" +
		"        command: oauthfs\n" +
		"        args: [exec-credential, Cluster]\n" +
		"        interactiveMode: Never\n" +
		"expirationTimestamp is the token's refresh time, when kubectl asks again.\n" +
		"The answer's apiVersion is the one kubectl asks for ($KUBERNETES_EXEC_INFO).",
	flags: execCredentialFlags,
}

// execAPIVersions are the ExecCredential versions client-go speaks.
var execAPIVersions = []string{"client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"}

// execCredentialFlags declares the flags of oauthfs exec-credential.
func execCredentialFlags(fs *flag.FlagSet) runFunc {
	sock, cfg := socketFlags(fs)
	query := tokenQueryFlags(fs)
	version := fs.String("api-version", "", "the ExecCredential `apiVersion` to answer with (default: the one $KUBERNETES_EXEC_INFO asks for, else "+execAPIVersions[0]+")")
	return func(stdout, _ io.Writer) error {
		q, err := query()
		if err != nil {
			return err
		}
		v, err := execAPIVersion(*version, os.Getenv("KUBERNETES_EXEC_INFO"))
		if err != nil {
			return err
		}
		id, c, ctx, cancel, err := dialFor(fs, sock, cfg)
		if err != nil {
			return err
		}
		defer cancel()
		t, until, err := c.TokenUntil(ctx, id, q)
		if err != nil {
			return explainToken(err, id, q)
		}
		if !strings.EqualFold(t.Type(), "Bearer") {
			return fmt.Errorf("exec-credential: %s's token is a %s token; kubectl sends only bearer tokens", printable.String(id, 0), printable.String(t.Type(), 32))
		}
		head := `{"apiVersion":"` + v + `","kind":"ExecCredential","status":{`
		if !until.IsZero() {
			head += `"expirationTimestamp":"` + until.UTC().Format(time.RFC3339) + `",`
		}
		return writeWithToken(stdout, t, head+`"token":`, "}}\n")
	}
}

// execAPIVersion is the ExecCredential version to answer with: the flag's,
// else the one client-go's KUBERNETES_EXEC_INFO asks for, else v1.
func execAPIVersion(flagValue, info string) (string, error) {
	v := flagValue
	if v == "" && info != "" {
		var in struct {
			APIVersion string `json:"apiVersion"`
		}
		if err := json.Unmarshal([]byte(info), &in); err != nil {
			return "", fmt.Errorf("exec-credential: $KUBERNETES_EXEC_INFO is not the JSON client-go sends: %v", err)
		}
		v = in.APIVersion
	}
	if v == "" {
		return execAPIVersions[0], nil
	}
	for _, known := range execAPIVersions {
		if v == known {
			return v, nil
		}
	}
	return "", withHint(fmt.Errorf("exec-credential: apiVersion %q is not one this plugin speaks", printable.String(v, 64)),
		"use %s in the kubeconfig's exec section", strings.Join(execAPIVersions, " or "))
}

// writeWithToken writes head, t as a JSON string, and tail to w, the token
// going from a locked buffer to w.
func writeWithToken(w io.Writer, t *credential.Token, head, tail string) error {
	plain, release, err := t.View()
	if err != nil {
		return err
	}
	defer release()
	buf, err := secmem.NewBuffer(len(head) + wirejson.QuotedLen(plain) + len(tail))
	if err != nil {
		return err
	}
	defer buf.Destroy()
	b := append(buf.Bytes()[:0], head...)
	b = wirejson.AppendQuoted(b, plain)
	b = append(b, tail...)
	_, err = w.Write(b)
	return err
}

var dockerCredentialCommand = &command{
	name: "docker-credential", args: "get|store|erase|list",
	summary: "a docker credential helper answering with the tokens of registries' integrations",
	help: "A docker credential helper (docker-credential-oauthfs, a link to oauthfs):\n" +
		"get answers for the registries the configuration maps to integrations\n" +
		"(docker_registries), with the integration's token as the secret. In\n" +
		"~/.docker/config.json:\n" +
		"  {\"credHelpers\": {\"ghcr.io\": \"oauthfs\"}}\n" +
		"store and erase are refused: the broker owns the tokens (sign in and out\n" +
		"with oauthfs login and logout). list names the mapped registries.",
	flags: dockerCredentialFlags,
}

// dockerNotFound is what a docker credential helper prints when it has
// no credentials for a server: docker matches this text.
const dockerNotFound = "credentials not found in native keychain"

// errDockerNotFound is a registry no integration answers for.
var errDockerNotFound = errors.New(dockerNotFound)

// dockerCredentialFlags declares the flags of oauthfs docker-credential.
func dockerCredentialFlags(fs *flag.FlagSet) runFunc {
	sock, cfg := socketFlags(fs)
	return func(stdout, _ io.Writer) error {
		if fs.NArg() != 1 {
			return usageErrorf("docker-credential takes one action: get, store, erase or list")
		}
		action := fs.Arg(0)
		switch action {
		case "store", "erase":
			// Read what docker sends, so that it never blocks writing it.
			io.Copy(io.Discard, io.LimitReader(os.Stdin, 1<<20))
			return withHint(fmt.Errorf("docker-credential: %s refused: oauthfs keeps these tokens in its broker and refreshes them", action),
				"sign in with 'oauthfs login NAME' and out with 'oauthfs logout NAME'; remove the registry from credHelpers to let docker keep its own credentials")
		case "get", "list":
		case "version":
			fmt.Fprintf(stdout, "oauthfs %s\n", versionString())
			return nil
		default:
			return usageErrorf("docker-credential: unknown action %q (want get, store, erase or list)", printable.String(action, 32))
		}
		var server string
		if action == "get" {
			line, err := bufio.NewReader(io.LimitReader(os.Stdin, 4096)).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			server = strings.TrimSpace(line)
		}
		c, ctx, cancel, err := dial(*sock, *cfg)
		if err != nil {
			return err
		}
		defer cancel()
		list, err := c.Integrations(ctx)
		if err != nil {
			return explain(err, "")
		}
		if action == "list" {
			out := map[string]string{}
			for _, in := range list {
				for _, h := range in.DockerRegistries {
					out[h] = in.DockerUsername
				}
			}
			b, _ := json.Marshal(out)
			_, err := fmt.Fprintf(stdout, "%s\n", b)
			return err
		}
		host := registryHost(server)
		var in *credential.Integration
		for i := range list {
			for _, h := range list[i].DockerRegistries {
				if strings.EqualFold(h, host) {
					in = &list[i]
				}
			}
		}
		if in == nil {
			// Docker expects this text on stdout and a failure.
			fmt.Fprintln(stdout, dockerNotFound)
			return errDockerNotFound
		}
		t, err := c.Token(ctx, in.GUID)
		if err != nil {
			return explain(err, in.Name)
		}
		head, _ := json.Marshal(map[string]string{"ServerURL": server, "Username": in.DockerUsername})
		// {"ServerURL":...,"Username":...,"Secret":"<token>"}
		return writeWithToken(stdout, t, string(head[:len(head)-1])+`,"Secret":`, "}\n")
	}
}

// registryHost is the registry host a docker server URL names: without
// scheme or path ("https://ghcr.io/v2/" is ghcr.io), lower-cased.
func registryHost(server string) string {
	s := server
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.IndexAny(s, "/?#"); i >= 0 {
		s = s[:i]
	}
	return strings.ToLower(s)
}
