// promql-names prints the metric names a PromQL expression selects, one per line, sorted and unique.
// It uses Prometheus' own parser (the same module promtool is built from), so every construct the
// rules or the dashboard may use is understood exactly as Prometheus understands it.
//
//	promql-names < expressions.txt     one expression per line; a parse error exits 1 naming the line
package main

import (
	"bufio"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	names := map[string]bool{}
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	for scanner.Scan() {
		line++
		text := scanner.Text()
		if text == "" {
			continue
		}
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(text)
		if err != nil {
			fmt.Fprintf(os.Stderr, "line %d: %v\n  %s\n", line, err, text)
			os.Exit(1)
		}
		parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
			selector, ok := node.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := selector.Name
			for _, matcher := range selector.LabelMatchers {
				if matcher.Name == labels.MetricName && matcher.Type == labels.MatchEqual {
					name = matcher.Value
				}
			}
			if name == "" {
				fmt.Fprintf(os.Stderr, "line %d: a selector without a metric name: %s\n", line, selector)
				os.Exit(1)
			}
			names[name] = true
			return nil
		})
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sorted := make([]string, 0, len(names))
	for name := range names {
		sorted = append(sorted, name)
	}
	sort.Strings(sorted)
	for _, name := range sorted {
		fmt.Println(name)
	}
}
