// The floor: a kube-scheduler extender that decides nothing. It decodes the
// ExtenderArgs as any extender must, keeps every node and scores each 0.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
)

type extenderArgs struct {
	Pod       map[string]any
	Nodes     *json.RawMessage
	NodeNames *[]string
}

type hostPriority struct {
	Host  string
	Score int64
}

func decode(w http.ResponseWriter, r *http.Request) (*extenderArgs, bool) {
	var args extenderArgs
	if err := json.NewDecoder(r.Body).Decode(&args); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, false
	}
	if args.NodeNames == nil {
		http.Error(w, "NodeNames mode only", http.StatusBadRequest)
		return nil, false
	}
	return &args, true
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Print(err)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	http.HandleFunc("/filter", func(w http.ResponseWriter, r *http.Request) {
		if args, ok := decode(w, r); ok {
			reply(w, map[string]any{
				"Nodes": nil, "NodeNames": *args.NodeNames, "FailedNodes": map[string]string{},
				"FailedAndUnresolvableNodes": map[string]string{}, "Error": "",
			})
		}
	})
	http.HandleFunc("/prioritize", func(w http.ResponseWriter, r *http.Request) {
		if args, ok := decode(w, r); ok {
			out := make([]hostPriority, len(*args.NodeNames))
			for i, n := range *args.NodeNames {
				out[i] = hostPriority{Host: n}
			}
			reply(w, out)
		}
	})
	http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	log.Fatal(http.ListenAndServe(*addr, nil))
}
