// dockerfile-check reads a Dockerfile/Containerfile with BuildKit's own parser and the
// instruction-level checks of BuildKit's linter (the rules `docker build --check` runs),
// and prints what it found as JSON for guestha's tests: the instructions as parsed, the
// build stages, the parser's warnings and the linter's. Exit 1 when it does not parse.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

type instruction struct {
	Command  string   `json:"command"`
	Flags    []string `json:"flags"`
	Args     []string `json:"args"`
	JSONForm bool     `json:"jsonForm"`
	Original string   `json:"original"`
	Line     int      `json:"line"`
}

type stage struct {
	Name     string   `json:"name"`
	BaseName string   `json:"baseName"`
	Commands []string `json:"commands"`
}

type report struct {
	Instructions []instruction `json:"instructions"`
	Stages       []stage       `json:"stages"`
	Warnings     []string      `json:"warnings"`
	Lint         []string      `json:"lint"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dockerfile-check FILE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := report{Instructions: []instruction{}, Stages: []stage{}, Warnings: []string{}, Lint: []string{}}
	for _, w := range res.Warnings {
		out.Warnings = append(out.Warnings, w.Short)
	}
	for _, n := range res.AST.Children {
		in := instruction{Command: n.Value, Flags: n.Flags, Args: []string{}, Original: n.Original,
			Line: n.StartLine, JSONForm: n.Attributes["json"]}
		if in.Flags == nil {
			in.Flags = []string{}
		}
		for a := n.Next; a != nil; a = a.Next {
			in.Args = append(in.Args, a.Value)
		}
		out.Instructions = append(out.Instructions, in)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		out.Lint = append(out.Lint, fmt.Sprintf("%s (line %d): %s", rule, line, msg))
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, s := range stages {
		st := stage{Name: s.Name, BaseName: s.BaseName, Commands: []string{}}
		for _, c := range s.Commands {
			st.Commands = append(st.Commands, c.Name())
		}
		out.Stages = append(out.Stages, st)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
