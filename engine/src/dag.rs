//! The task graph: edges, a topological order, cycles, downstream closures, rendering.
//!
//! Tasks are identified by their index in the workflow (file order).

use std::collections::BTreeSet;

use petgraph::graph::{DiGraph, NodeIndex};

#[derive(Debug, Clone)]
pub struct Dag {
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
    /// Topological order, ties broken by file order.
    order: Vec<usize>,
}

impl Dag {
    /// Builds the graph from each task's upstream indices, or returns the cycles found,
    /// each as the list of task indices along it (first repeated at the end).
    pub fn new(upstream: Vec<Vec<usize>>) -> Result<Dag, Vec<Vec<usize>>> {
        let n = upstream.len();
        let mut downstream = vec![Vec::new(); n];
        for (task, ups) in upstream.iter().enumerate() {
            for &u in ups {
                downstream[u].push(task);
            }
        }
        let cycles = find_cycles(&upstream);
        if !cycles.is_empty() {
            return Err(cycles);
        }
        // Kahn's algorithm with a min-heap on index keeps file order among peers.
        let mut indegree: Vec<usize> = upstream.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..n).filter(|&t| indegree[t] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(t) = ready.pop_first() {
            order.push(t);
            for &d in &downstream[t] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        Ok(Dag {
            upstream,
            downstream,
            order,
        })
    }

    pub fn len(&self) -> usize {
        self.upstream.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upstream.is_empty()
    }

    pub fn upstream(&self, task: usize) -> &[usize] {
        &self.upstream[task]
    }

    pub fn downstream(&self, task: usize) -> &[usize] {
        &self.downstream[task]
    }

    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// `roots` and everything downstream of them.
    pub fn closure(&self, roots: impl IntoIterator<Item = usize>) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = roots.into_iter().collect();
        while let Some(t) = stack.pop() {
            if seen.insert(t) {
                stack.extend_from_slice(&self.downstream[t]);
            }
        }
        seen
    }
}

/// One cycle per strongly connected component that has one (or a self-loop).
fn find_cycles(upstream: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(upstream.len(), 0);
    let nodes: Vec<NodeIndex> = (0..upstream.len()).map(|i| g.add_node(i)).collect();
    for (task, ups) in upstream.iter().enumerate() {
        for &u in ups {
            g.add_edge(nodes[u], nodes[task], ());
        }
    }
    let mut cycles = Vec::new();
    // Kosaraju, not Tarjan: petgraph's Tarjan recurses once per node of a path, and a
    // 100,000-task chain overflows a thread's stack.
    for scc in petgraph::algo::kosaraju_scc(&g) {
        let members: BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
        let Some(&start) = members.first() else {
            continue;
        };
        let self_loop = upstream[start].contains(&start);
        if members.len() == 1 && !self_loop {
            continue;
        }
        cycles.push(cycle_through(start, &members, upstream));
    }
    cycles.sort();
    cycles
}

/// A path start -> ... -> start within `members` (which is strongly connected), following
/// edges upstream -> downstream.
fn cycle_through(start: usize, members: &BTreeSet<usize>, upstream: &[Vec<usize>]) -> Vec<usize> {
    // Breadth-first search from start along downstream edges back to start.
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); upstream.len()];
    for (task, ups) in upstream.iter().enumerate() {
        for &u in ups {
            downstream[u].push(task);
        }
    }
    let mut prev: std::collections::HashMap<usize, usize> = Default::default();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(t) = queue.pop_front() {
        for &d in &downstream[t] {
            if !members.contains(&d) {
                continue;
            }
            if d == start {
                // Walk back from t to start, then close the loop.
                let mut path = vec![t];
                while let Some(&p) = prev.get(path.last().unwrap_or(&start)) {
                    path.push(p);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(d) {
                e.insert(t);
                queue.push_back(d);
            }
        }
    }
    vec![start, start]
}

/// Graphviz dot. `ids[i]` names task i; `rules[i]` its trigger rule, shown when not default.
pub fn to_dot(name: &str, ids: &[&str], dag: &Dag, labels: &[Option<&str>]) -> String {
    let mut out = format!("digraph \"{name}\" {{\n  rankdir=LR;\n");
    for &t in dag.order() {
        match labels[t] {
            Some(l) => out.push_str(&format!(
                "  \"{}\" [label=\"{}\\n({l})\"];\n",
                ids[t], ids[t]
            )),
            None => out.push_str(&format!("  \"{}\";\n", ids[t])),
        }
    }
    for &t in dag.order() {
        for &u in dag.upstream(t) {
            out.push_str(&format!("  \"{}\" -> \"{}\";\n", ids[u], ids[t]));
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart.
pub fn to_mermaid(ids: &[&str], dag: &Dag, labels: &[Option<&str>]) -> String {
    let mut out = String::from("flowchart LR\n");
    for &t in dag.order() {
        match labels[t] {
            Some(l) => out.push_str(&format!("  {}[\"{}<br/>({l})\"]\n", ids[t], ids[t])),
            None => out.push_str(&format!("  {}\n", ids[t])),
        }
    }
    for &t in dag.order() {
        for &u in dag.upstream(t) {
            out.push_str(&format!("  {} --> {}\n", ids[u], ids[t]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_closure() {
        // 0 -> 1 -> 3, 0 -> 2 -> 3
        let dag = Dag::new(vec![vec![], vec![0], vec![0], vec![1, 2]]).unwrap();
        assert_eq!(dag.order(), [0, 1, 2, 3]);
        assert_eq!(dag.closure([1]).into_iter().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(dag.downstream(0), [1, 2]);
    }

    #[test]
    fn cycles_are_reported_as_paths() {
        // 0 -> 1 -> 2 -> 0, and 3 depends on itself.
        let err = Dag::new(vec![vec![2], vec![0], vec![1], vec![3]]).unwrap_err();
        assert_eq!(err, vec![vec![0, 1, 2, 0], vec![3, 3]]);
    }
}
