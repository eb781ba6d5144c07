// A kube-scheduler-like extender client: per pod, POST /filter with ExtenderArgs in
// NodeNames mode, then POST /prioritize with the names the filter kept (skipped, as
// kube-scheduler does, when fewer than two are kept). encoding/json, keep-alive,
// C workers each doing one pod at a time. Every answer is checked against the
// driver's expectations after its pair is timed; the first wrong answer exits 1,
// so an error path is never what gets measured. Prints one JSON result.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type Pod struct {
	Metadata struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		UID         string            `json:"uid"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	} `json:"metadata"`
	Spec struct {
		SchedulerName string `json:"schedulerName,omitempty"`
		Containers    []struct {
			Name      string `json:"name"`
			Image     string `json:"image,omitempty"`
			Resources struct {
				Requests map[string]string `json:"requests,omitempty"`
				Limits   map[string]string `json:"limits,omitempty"`
			} `json:"resources"`
		} `json:"containers"`
	} `json:"spec"`
	Status struct {
		Phase string `json:"phase,omitempty"`
	} `json:"status"`
}

// The wire types have no json tags upstream: keys are the Go field names.
type extenderArgs struct {
	Pod       *Pod
	Nodes     *json.RawMessage
	NodeNames *[]string
}

type filterResult struct {
	Nodes                      *json.RawMessage
	NodeNames                  *[]string
	FailedNodes                map[string]string
	FailedAndUnresolvableNodes map[string]string
	Error                      string
}

type hostPriority struct {
	Host  string
	Score int64
}

// Case: one pod of the mix and what a correct filter answer keeps.
type Case struct {
	Kind    string
	Pod     Pod
	Exact   []string // if set: exactly these names are kept
	Forbid  []string // never kept
	MinKept int
	exact   map[string]bool
	forbid  map[string]bool
}

type Plan struct {
	NodeNames []string
	Cases     []*Case
}

type sample struct {
	kind        string
	pair        time.Duration
	decode      time.Duration
	filterBytes int
}

type gen struct {
	url    string
	client *http.Client
	plan   Plan
	input  map[string]bool
	always bool
	loose  bool // protocol checks only: the no-op keeps every node whatever the pod
	failed sync.Once
}

func (g *gen) post(verb string, args extenderArgs) ([]byte, error) {
	body, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	resp, err := g.client.Post(g.url+"/"+verb, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: status %d: %.300s", verb, resp.StatusCode, raw)
	}
	return raw, err
}

// pair does one pod's filter+prioritize; the checks run after the clock stops.
func (g *gen) pair(c *Case, worker, seq int) (sample, error) {
	pod := c.Pod
	pod.Metadata.UID = fmt.Sprintf("00000000-0000-4000-8000-%04x%08x", worker, seq)
	pod.Metadata.Name = fmt.Sprintf("%s-%d", c.Kind, seq)
	s := sample{kind: c.Kind}
	start := time.Now()
	raw, err := g.post("filter", extenderArgs{Pod: &pod, NodeNames: &g.plan.NodeNames})
	if err != nil {
		return s, err
	}
	t := time.Now()
	var fr filterResult
	err = json.Unmarshal(raw, &fr)
	s.decode, s.filterBytes = time.Since(t), len(raw)
	if err != nil {
		return s, fmt.Errorf("filter: %v", err)
	}
	var prio []hostPriority
	var praw []byte
	if fr.NodeNames != nil && (len(*fr.NodeNames) > 1 || g.always) {
		if praw, err = g.post("prioritize", extenderArgs{Pod: &pod, NodeNames: fr.NodeNames}); err != nil {
			return s, err
		}
		if err = json.Unmarshal(praw, &prio); err != nil {
			return s, fmt.Errorf("prioritize: not a bare HostPriority array: %v: %.200s", err, praw)
		}
	}
	s.pair = time.Since(start)
	return s, g.check(c, &fr, praw, prio)
}

func (g *gen) check(c *Case, fr *filterResult, praw []byte, prio []hostPriority) error {
	if fr.Error != "" {
		return fmt.Errorf("filter Error: %s", fr.Error)
	}
	if fr.NodeNames == nil {
		return fmt.Errorf("filter: NodeNames is null")
	}
	kept := map[string]bool{}
	for _, n := range *fr.NodeNames {
		if !g.input[n] || kept[n] {
			return fmt.Errorf("filter kept %q: not in the input or twice", n)
		}
		if c.forbid[n] && !g.loose {
			return fmt.Errorf("filter kept forbidden node %q", n)
		}
		kept[n] = true
	}
	if len(kept) < c.MinKept && !g.loose {
		return fmt.Errorf("filter kept %d nodes, want at least %d", len(kept), c.MinKept)
	}
	if c.exact != nil && !g.loose {
		for n := range c.exact {
			if !kept[n] {
				return fmt.Errorf("filter dropped %q; want exactly %v", n, c.Exact)
			}
		}
		if len(kept) != len(c.exact) {
			return fmt.Errorf("filter kept %d nodes; want exactly %v", len(kept), c.Exact)
		}
	}
	if praw == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, h := range prio {
		if !kept[h.Host] || seen[h.Host] {
			return fmt.Errorf("prioritize scored %q: not kept by filter, or twice", h.Host)
		}
		seen[h.Host] = true
	}
	if len(seen) != len(kept) {
		return fmt.Errorf("prioritize scored %d hosts, filter kept %d", len(seen), len(kept))
	}
	return nil
}

func (g *gen) run(pairs, concurrency, offset int) ([]sample, time.Duration) {
	var next atomic.Int64
	out := make([][]sample, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= pairs {
					return
				}
				c := g.plan.Cases[i%len(g.plan.Cases)]
				s, err := g.pair(c, w, offset+i)
				if err != nil {
					g.failed.Do(func() {
						fmt.Fprintf(os.Stderr, "incorrect answer from %s (pod kind %s): %v\n", g.url, c.Kind, err)
						os.Exit(1)
					})
				}
				out[w] = append(out[w], s)
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []sample
	for _, o := range out {
		all = append(all, o...)
	}
	return all, elapsed
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pct: nearest-rank percentile of sorted durations.
func pct(sorted []time.Duration, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return ms(sorted[max(0, i)])
}

type stats struct {
	Pairs           int
	P50Ms, P99Ms    float64
	DecodeMsMean    float64
	DecodeMsP50     float64
	FilterBytesMean float64
}

func summarise(samples []sample) stats {
	pairs := make([]time.Duration, len(samples))
	decodes := make([]time.Duration, len(samples))
	var bytesSum int
	var decodeSum time.Duration
	for i, s := range samples {
		pairs[i], decodes[i] = s.pair, s.decode
		bytesSum += s.filterBytes
		decodeSum += s.decode
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i] < pairs[j] })
	sort.Slice(decodes, func(i, j int) bool { return decodes[i] < decodes[j] })
	n := float64(len(samples))
	return stats{
		Pairs: len(samples), P50Ms: pct(pairs, 0.5), P99Ms: pct(pairs, 0.99),
		DecodeMsMean: ms(decodeSum) / n, DecodeMsP50: pct(decodes, 0.5),
		FilterBytesMean: float64(bytesSum) / n,
	}
}

func main() {
	url := flag.String("url", "", "extender base URL, e.g. http://127.0.0.1:8888")
	planPath := flag.String("plan", "", "JSON plan: {NodeNames, Cases: [{Kind, Pod, Exact, Forbid, MinKept}]}")
	pairs := flag.Int("pairs", 200, "measured pairs")
	warmup := flag.Int("warmup", 20, "pairs before measuring")
	concurrency := flag.Int("concurrency", 1, "workers, each one pod at a time")
	loose := flag.Bool("protocol-only", false, "check the protocol, not the pod kinds' expectations")
	always := flag.Bool("always-prioritize", false, "call prioritize even when filter kept < 2 nodes")
	flag.Parse()
	data, err := os.ReadFile(*planPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	g := &gen{url: *url, input: map[string]bool{}, always: *always, loose: *loose}
	if err = json.Unmarshal(data, &g.plan); err != nil || len(g.plan.Cases) == 0 {
		fmt.Fprintf(os.Stderr, "bad plan %s: %v\n", *planPath, err)
		os.Exit(2)
	}
	for _, n := range g.plan.NodeNames {
		g.input[n] = true
	}
	for _, c := range g.plan.Cases {
		c.forbid = map[string]bool{}
		for _, n := range c.Forbid {
			c.forbid[n] = true
		}
		if c.Exact != nil {
			c.exact = map[string]bool{}
			for _, n := range c.Exact {
				c.exact[n] = true
			}
		}
	}
	// kube-scheduler's client: keep-alive, 5 s default extender timeout.
	transport := &http.Transport{MaxIdleConnsPerHost: *concurrency + 1}
	g.client = &http.Client{Transport: transport, Timeout: 5 * time.Second}
	g.run(*warmup, *concurrency, 0)
	samples, elapsed := g.run(*pairs, *concurrency, *warmup)
	kinds := map[string][]sample{}
	for _, s := range samples {
		kinds[s.kind] = append(kinds[s.kind], s)
	}
	result := map[string]any{
		"All": summarise(samples), "Seconds": elapsed.Seconds(),
		"PairsPerSec": float64(len(samples)) / elapsed.Seconds(), "Concurrency": *concurrency,
	}
	byKind := map[string]stats{}
	for k, ss := range kinds {
		byKind[k] = summarise(ss)
	}
	result["Kinds"] = byKind
	json.NewEncoder(os.Stdout).Encode(result)
}
