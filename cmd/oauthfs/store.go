package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/store"
)

var storeCommand = &command{
	name: "store", args: "migrate --from file --to postgres [--config FILE]",
	summary: "copy the credentials of a file store into the cluster's database",
	help: "Copy every user's credentials from the file store (the configuration's\n" +
		"state_dir and key_file) into the PostgreSQL database of its [store]\n" +
		"table, so that a cluster starts with them and nobody signs in again.\n" +
		"Users are keyed by their name on this host. A record the database\n" +
		"already holds is replaced only by a newer one; the files are left as\n" +
		"they are. Run it on the host whose state_dir holds the credentials,\n" +
		"with the key_file every broker host will share.",
	flags: storeFlags,
}

// storeFlags declares the flags of oauthfs store migrate, its one
// subcommand.
func storeFlags(fs *flag.FlagSet) runFunc {
	def := systemConfig
	if os.Geteuid() != 0 {
		def = config.DefaultFile()
	}
	cfgFile := fs.String("config", def, "configuration `file`: its [store] is the destination")
	from := fs.String("from", "", "where the credentials are: file")
	to := fs.String("to", "", "where they go: postgres")
	return func(stdout, stderr io.Writer) error {
		if fs.NArg() == 0 || fs.Arg(0) != "migrate" {
			return usageErrorf("store takes one subcommand: migrate --from file --to postgres")
		}
		if *from != config.BackendFile || *to != config.BackendPostgres || fs.NArg() != 1 {
			return usageErrorf("store migrate moves credentials --from file --to postgres")
		}
		defer memguard.Purge()
		cfg, err := config.Load(*cfgFile)
		if err != nil {
			return configError(err)
		}
		if cfg.Store.Backend != config.BackendPostgres {
			return withHint(fmt.Errorf("store migrate: %s has no [store] backend = \"postgres\" to move the credentials to", cfg.File),
				"add the [store] table with the database's dsn (docs/cluster.md)")
		}
		if cfg.Settings.MemoryOnly() {
			return fmt.Errorf("store migrate: %s keeps credentials in memory only (state_dir = \"\"): there is nothing to move", cfg.File)
		}
		files, err := store.OpenFile(*cfg.Settings.StateDir, cfg.Settings.KeyFile)
		if err != nil {
			return explain(err, "")
		}
		dsn, err := cfg.Store.ReadDSN()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		db, err := store.OpenPostgres(ctx, dsn, store.PostgresOptions{KeyFile: cfg.Settings.KeyFile, Timeout: cfg.Settings.RequestTimeout})
		if err != nil {
			return explain(err, "")
		}
		defer db.Close()
		names := map[string]string{}
		for _, in := range cfg.Integrations {
			names[in.GUID.String()] = in.Name
		}
		moved, err := store.Migrate(ctx, files, db, func(uid int) (string, bool) {
			u, err := user.LookupId(strconv.Itoa(uid))
			if err != nil {
				return "", false
			}
			return u.Username, true
		})
		n := 0
		for _, m := range moved {
			what := m.GUID
			if name := names[m.GUID]; name != "" {
				what = name + " (" + m.GUID + ")"
			}
			if m.Kept {
				fmt.Fprintf(stdout, "kept %s %s: the database's is as new or newer\n", m.User, what)
			} else {
				fmt.Fprintf(stdout, "moved %s %s\n", m.User, what)
				n++
			}
		}
		if err != nil {
			return explain(err, "")
		}
		fmt.Fprintf(stdout, "%d of %d credentials moved\n", n, len(moved))
		return nil
	}
}
