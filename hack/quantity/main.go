// Command quantity answers, for each input line, what Kubernetes' own quantity parser
// (k8s.io/apimachinery/pkg/api/resource.ParseQuantity, the parser behind the API server's
// CEL quantity() and isQuantity()) makes of a string. kubevisor's property tests use it
// as the oracle that kubevisor.api.quantity accepts the same strings with the same values.
//
// Protocol: each stdin line is one JSON string; each stdout line is a JSON object
// {"ok": true, "value": "<exact decimal>", "format": "<BinarySI|DecimalSI|DecimalExponent>"}
// or {"ok": false, "error": "<parser message>"}, in order, flushed per line.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"
)

type answer struct {
	OK     bool   `json:"ok"`
	Value  string `json:"value,omitempty"`
	Format string `json:"format,omitempty"`
	Error  string `json:"error,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	encoder := json.NewEncoder(out)
	for in.Scan() {
		var text string
		if err := json.Unmarshal(in.Bytes(), &text); err != nil {
			fmt.Fprintf(os.Stderr, "quantity: not a JSON string: %v\n", err)
			os.Exit(2)
		}
		var reply answer
		if q, err := resource.ParseQuantity(text); err != nil {
			reply = answer{OK: false, Error: err.Error()}
		} else {
			reply = answer{OK: true, Value: q.AsDec().String(), Format: string(q.Format)}
		}
		if err := encoder.Encode(reply); err != nil {
			os.Exit(2)
		}
		if err := out.Flush(); err != nil {
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "quantity: %v\n", err)
		os.Exit(2)
	}
}
