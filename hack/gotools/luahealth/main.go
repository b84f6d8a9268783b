// Command luahealth runs Argo CD resource health checks (health.lua) on gopher-lua, the Lua
// engine Argo CD embeds, the way Argo CD's controller runs them: a fresh state per object
// with only the base, package and table libraries open (what a script installed through
// argocd-cm gets unless useOpenLibs is set), the object as the global `obj`, a one-second
// deadline, and the returned table's `status` and `message` read back (an unknown status
// word becomes Unknown, "Lua returned an invalid health status", as in Argo CD).
//
// Usage:
//
//	luahealth test DIR...       each DIR holds health.lua and health_test.yaml (Argo CD's
//	                            layout); every case is run and compared; exit 1 on a mismatch
//	luahealth eval SCRIPT FILE  print the health of the object in FILE (YAML or JSON) as JSON
//
// guestha builds it from this file through hack/testbed/build.py; it is never imported.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// Health is what a health.lua returns, as Argo CD reads it.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

type testFile struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus Health `json:"healthStatus"`
	} `json:"tests"`
}

var valid = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true,
	"Missing": true, "Unknown": true,
}

// toLua turns a decoded JSON value into a Lua value as Argo CD does (numbers are floats).
func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func evaluate(script string, obj map[string]any) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			return Health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	h := Health{}
	if s, ok := ret.RawGetString("status").(lua.LString); ok {
		h.Status = string(s)
	}
	if m, ok := ret.RawGetString("message").(lua.LString); ok {
		h.Message = string(m)
	}
	if !valid[h.Status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

func readObject(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

// runTests runs one Argo CD health check folder; it returns the number of failed cases.
func runTests(dir string) (int, error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return 0, err
	}
	data, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return 0, err
	}
	var tests testFile
	if err := yaml.UnmarshalStrict(data, &tests); err != nil {
		return 0, fmt.Errorf("%s: %w", filepath.Join(dir, "health_test.yaml"), err)
	}
	if len(tests.Tests) == 0 {
		return 0, fmt.Errorf("%s: no tests", filepath.Join(dir, "health_test.yaml"))
	}
	failed := 0
	for _, tc := range tests.Tests {
		obj, err := readObject(filepath.Join(dir, tc.InputPath))
		if err != nil {
			return failed, err
		}
		got, err := evaluate(string(script), obj)
		name := filepath.Join(dir, tc.InputPath)
		switch {
		case err != nil:
			failed++
			fmt.Printf("FAIL %s: %v\n", name, err)
		case got != tc.HealthStatus:
			failed++
			want, _ := json.Marshal(tc.HealthStatus)
			have, _ := json.Marshal(got)
			fmt.Printf("FAIL %s: expected %s, got %s\n", name, want, have)
		default:
			fmt.Printf("ok   %s: %s\n", name, got.Status)
		}
	}
	return failed, nil
}

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "test" {
		failed := 0
		for _, dir := range os.Args[2:] {
			n, err := runTests(dir)
			if err != nil {
				fmt.Fprintln(os.Stderr, "luahealth:", err)
				os.Exit(2)
			}
			failed += n
		}
		if failed > 0 {
			fmt.Printf("%d case(s) failed\n", failed)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 4 && os.Args[1] == "eval" {
		script, err := os.ReadFile(os.Args[2])
		if err == nil {
			var obj map[string]any
			if obj, err = readObject(os.Args[3]); err == nil {
				var h Health
				if h, err = evaluate(string(script), obj); err == nil {
					out, _ := json.Marshal(h)
					fmt.Println(string(out))
					return
				}
			}
		}
		fmt.Fprintln(os.Stderr, "luahealth:", err)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, "usage: luahealth test DIR... | luahealth eval SCRIPT FILE")
	os.Exit(2)
}
