//go:build ignore

// Command unused reports the types and constants of oauthfs that nothing
// uses, which deadcode (functions only) and staticcheck (unexported names
// only) do not: 'go run scripts/unused.go' from the module's root. It is
// syntactic and errs on the side of silence: a name counts as used when
// any file of the module, tests included, mentions an identifier of that
// name anywhere but where it is declared.
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type decl struct {
	name, kind string
	pos        token.Position
}

func main() {
	fset := token.NewFileSet()
	var decls []decl
	declared := map[*ast.Ident]bool{}
	used := map[string]int{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != "." && (strings.HasPrefix(n, ".") || n == "node_modules" || n == "testdata" || n == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || path == filepath.Join("scripts", "unused.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		test := strings.HasSuffix(path, "_test.go")
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || test || (g.Tok != token.TYPE && g.Tok != token.CONST) {
				continue
			}
			for _, s := range g.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					declared[s.Name] = true
					decls = append(decls, decl{s.Name.Name, "type", fset.Position(s.Name.Pos())})
				case *ast.ValueSpec:
					for _, n := range s.Names {
						if n.Name == "_" {
							continue
						}
						declared[n] = true
						decls = append(decls, decl{n.Name, "const", fset.Position(n.Pos())})
					}
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && !declared[id] {
				used[id.Name]++
			}
			return true
		})
		return nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "unused:", err)
		os.Exit(2)
	}
	var out []string
	for _, d := range decls {
		if used[d.name] == 0 {
			out = append(out, fmt.Sprintf("%s: %s %s is never used", d.pos, d.kind, d.name))
		}
	}
	sort.Strings(out)
	for _, l := range out {
		fmt.Println(l)
	}
	if len(out) > 0 {
		os.Exit(1)
	}
}
