package fleet

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestSignVerify(t *testing.T) {
	pub, priv, err := Keygen()
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _, _ := Keygen()
	k, err := ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ParsePublicKey(otherPub)
	doc := `{"revision": 3, "target": "group:lab", "functions": [{"name": "a", "source": "return 1", "triggers": ["mqtt:x"]}]}`
	s, err := Sign([]byte(doc), priv)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(s)
	d, err := Verify(payload, []PublicKey{other, k})
	if err != nil || d.Revision != 3 || d.Target != "group:lab" || d.Functions[0].Name != "a" {
		t.Fatalf("verify: %+v, %v", d, err)
	}
	if _, err := Verify(payload, []PublicKey{other}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another key: %v", err)
	}
	tampered := strings.Replace(string(payload), `"revision":3`, `"revision":4`, 1)
	if tampered == string(payload) {
		t.Fatalf("the test did not tamper: %s", payload)
	}
	if _, err := Verify([]byte(tampered), []PublicKey{k}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered: %v", err)
	}
	if _, err := ParsePublicKey(priv); err == nil {
		t.Fatal("a private key parsed as a public one")
	}
	if _, err := Sign([]byte(`{"revision": 0, "target": "lab", "functions": []}`), priv); err == nil {
		t.Fatal("an invalid document was signed")
	}
}

func TestMerge(t *testing.T) {
	fn := func(name, src string) Function { return Function{Name: name, Source: src} }
	layers := map[string]*Document{
		"group:base":  {Revision: 1, Target: "group:base", Priority: 10, Functions: []Function{fn("a", "base"), fn("b", "base"), fn("c", "base")}},
		"group:lab":   {Revision: 7, Target: "group:lab", Priority: 1, Functions: []Function{fn("a", "lab"), fn("d", "lab")}},
		"group:other": {Revision: 2, Target: "group:other", Functions: []Function{fn("x", "other")}}, // not a group of gw1
		"gateway:gw1": {Revision: 2, Target: "gateway:gw1", Priority: -5, Functions: []Function{fn("b", "own")}},
	}
	got := map[string]string{}
	for _, f := range Merge("gw1", []string{"base", "lab"}, layers) {
		got[f.Name] = f.Source + "@" + f.Target
	}
	want := map[string]string{"a": "base@group:base", "b": "own@gateway:gw1", "c": "base@group:base", "d": "lab@group:lab"}
	if len(got) != len(want) {
		t.Fatalf("merged %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("merged %v, want %v", got, want)
		}
	}
	// Equal priorities: the group later in fleet.groups wins.
	layers["group:lab"].Priority = 10
	for _, f := range Merge("gw1", []string{"base", "lab"}, layers) {
		if f.Name == "a" && f.Source != "lab" {
			t.Fatalf("equal priorities: a from %s, want lab", f.Target)
		}
	}
}
