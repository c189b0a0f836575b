#!/usr/bin/env python3
"""check_layers.py - the layering rule of docs/ARCHITECTURE.md ("Layers"), checked.

    base <- engine <- policies;  base <- datasets, metrics;  harness on top

Every `#include "..."` in a layer folder must name a header of that folder or
of one below it, and each layer's static library in meson.build may depend
only on the libraries below it. An include is resolved as the compiler does:
beside the including file first, then by bare name in the layer folders (the
include directories meson hands out); a bare name that some forbidden folder
also holds fails too, since then the -I order alone would decide.

Besides, a few headers are one layer's private part (docs/ARCHITECTURE.md,
"Private headers"): the harness must not include policies/policy_impl.h
(a method's vtable and fields) nor engine/model_impl.h (the weights), nor
may the policies include engine/model_impl.h; they use policy.h's and
model.h's accessors.

Before the tree, the checker runs on a small made-up tree holding one
violation of each kind and must report each: a checker that found nothing
would otherwise pass.

    check_layers.py [--root DIR]      exit 0 when the rule holds, 1 otherwise
"""
import argparse
import os
import re
import sys
import tempfile

# Which folders each layer may include from (itself included).
ALLOWED = {
    'base': {'base'},
    'engine': {'base', 'engine'},
    'policies': {'base', 'engine', 'policies'},
    'datasets': {'base', 'datasets'},
    'metrics': {'base', 'metrics'},
}
# Folders a bare name can come from; the harness includes everything and is
# not checked, but a lower layer must not reach up into it either.
FOLDERS = ['base', 'engine', 'policies', 'datasets', 'metrics', 'harness']
# meson.build's library of each layer, and the dependency each exports.
LIBS = {'kvbase': 'base', 'kvengine': 'engine', 'kvpolicies': 'policies',
        'kvdatasets': 'datasets', 'kvmetrics': 'metrics'}
DEPS = {'base_dep': 'base', 'engine_dep': 'engine', 'policies_dep': 'policies',
        'datasets_dep': 'datasets', 'metrics_dep': 'metrics', 'harness_dep': 'harness'}

# Private headers, and the folders that must not include them.
PRIVATE = {'policies/policy_impl.h': {'harness'}, 'engine/model_impl.h': {'harness', 'policies'}}

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def folder_of(root, path):
    """The first component of path below root, or None outside it."""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    return None if rel.startswith('..') else rel.split(os.sep)[0]


def resolve(root, src, name):
    """The folders the header `name` included from `src` can come from."""
    beside = os.path.join(os.path.dirname(src), name)
    if os.path.isfile(beside):
        return {folder_of(root, beside)}
    return {f for f in FOLDERS if os.path.isfile(os.path.join(root, f, name))}


def resolve_paths(root, src, name):
    """The headers (paths relative to root) `name` included from `src` can be."""
    beside = os.path.join(os.path.dirname(src), name)
    if os.path.isfile(beside):
        return {os.path.relpath(os.path.realpath(beside), os.path.realpath(root)).replace(os.sep, '/')}
    return {'%s/%s' % (f, name) for f in FOLDERS if os.path.isfile(os.path.join(root, f, name))}


def sources(root, layer):
    """(path, path relative to root) of each .c and .h file under layer/."""
    for dirpath, _, files in sorted(os.walk(os.path.join(root, layer))):
        for fn in sorted(files):
            if fn.endswith(('.c', '.h')):
                src = os.path.join(dirpath, fn)
                yield src, os.path.relpath(src, root)


def includes(root, src):
    """(line number, name, headers it can resolve to) of each include in src."""
    with open(src, encoding='utf-8', errors='replace') as f:
        for lineno, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if m:
                yield lineno, m.group(1), sorted(resolve_paths(root, src, m.group(1)))


def private_reached(root, src, kept_from):
    """The first private header kept from `kept_from` that src includes,
    directly or through other headers, as (line in src, the include names
    that lead to it, the header), or None."""
    for lineno, name, hdrs in includes(root, src):
        seen, todo = set(), [(h, [name]) for h in hdrs]
        while todo:
            hdr, chain = todo.pop(0)
            if hdr in seen:
                continue
            seen.add(hdr)
            if kept_from in PRIVATE.get(hdr, ()):
                return lineno, chain, hdr
            todo += [(h, chain + [n]) for _, n, hs in includes(root, os.path.join(root, hdr)) for h in hs]
    return None


def check_private(root):
    """Includes of a private header (PRIVATE), direct or through another
    header, from a folder it is kept from."""
    problems = []
    for layer in sorted({f for kept in PRIVATE.values() for f in kept}):
        for src, rel in sources(root, layer):
            found = private_reached(root, src, layer)
            if found:
                lineno, chain, hdr = found
                problems.append('%s:%d: "%s" is %s, private to %s/; %s/ must use its public header' %
                                (rel, lineno, '" -> "'.join(chain), hdr, hdr.split('/')[0], layer))
    return problems


def check_includes(root):
    """(problems, number of includes checked)."""
    problems, n = [], 0
    for layer, allowed in ALLOWED.items():
        top = os.path.join(root, layer)
        for dirpath, _, files in os.walk(top):
            for fn in sorted(files):
                if not fn.endswith(('.c', '.h')):
                    continue
                src = os.path.join(dirpath, fn)
                rel = os.path.relpath(src, root)
                with open(src, encoding='utf-8', errors='replace') as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        n += 1
                        found = resolve(root, src, m.group(1))
                        if not found:
                            problems.append('%s:%d: "%s": no such header in %s' %
                                            (rel, lineno, m.group(1), ', '.join(FOLDERS)))
                        elif found - allowed:
                            problems.append('%s:%d: "%s" is in %s/; %s/ may include only from %s' %
                                            (rel, lineno, m.group(1), '/, '.join(sorted(found - allowed)),
                                             layer, ', '.join(sorted(allowed))))
    return problems, n


def library_call(text, start):
    """meson text from `start` to the parenthesis closing the call there."""
    depth = 0
    for i in range(text.index('(', start), len(text)):
        depth += {'(': 1, ')': -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    return text[start:]


def check_meson(root):
    """Each layer's library and exported dependency against ALLOWED."""
    path = os.path.join(root, 'meson.build')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    problems, seen = [], set()
    for m in re.finditer(r"(\w+)\s*=\s*static_library\('(\w+)'", text):
        var, lib = m.group(1), m.group(2)
        layer = LIBS.get(lib)
        if not layer:
            continue
        seen.add(lib)
        calls = [library_call(text, m.start())]
        exported = re.search(r'\w+_dep\s*=\s*declare_dependency\(link_with\s*:\s*\[?\s*%s\b' % re.escape(var), text)
        if exported:
            calls.append(library_call(text, exported.start()))
        for call in calls:
            for dep in sorted(set(re.findall(r'\b(\w+_dep)\b', call))):
                if dep in DEPS and DEPS[dep] not in ALLOWED[layer]:
                    line = text.count('\n', 0, text.index(call)) + 1
                    problems.append('meson.build:%d: %s (%s/) depends on %s; %s/ may use only %s' %
                                    (line, lib, layer, dep, layer, ', '.join(sorted(ALLOWED[layer]))))
    for lib in sorted(set(LIBS) - seen):
        problems.append('meson.build: no static_library(\'%s\') found to check' % lib)
    return problems


def self_test():
    """Problems the checker fails to report on a tree built to have them."""
    files = {
        'base/kv_error.h': '',
        'base/ok.c': '#include "kv_error.h"\n',
        'engine/model.h': '#include "../base/kv_error.h"\n',
        'engine/up.c': '#include "../policies/policy.h"\n',          # upward, by path
        'policies/policy.h': '#include "model.h"\n',                 # bare, allowed (engine)
        'datasets/chat.c': '#include "model.h"\n',                   # bare, engine: forbidden
        'metrics/stats.c': '#include "../harness/clock.h"\n',        # into the harness
        'metrics/gone.c': '#include "nowhere.h"\n',                  # unresolved
        'harness/clock.h': '',
        'policies/policy_impl.h': '',
        'engine/model_impl.h': '',
        'harness/run.c': '#include "policy_impl.h"\n',                # bare, a policy's internals
        'harness/bench.c': '#include "../engine/model_impl.h"\n',     # by path, the weights
        'harness/chain.c': '#include "../policies/proxy.h"\n',       # through a public header
        'policies/proxy.h': '#include "policy_impl.h"\n',
        'policies/weights.c': '#include "model_impl.h"\n',            # bare, the weights
        'meson.build': ("base_lib = static_library('kvbase', 'base/ok.c')\n"
                        "base_dep = declare_dependency(link_with : base_lib)\n"
                        "engine_lib = static_library('kvengine', 'engine/up.c', dependencies : base_dep)\n"
                        "engine_dep = declare_dependency(link_with : engine_lib, dependencies : base_dep)\n"
                        "policies_lib = static_library('kvpolicies', 'x.c', dependencies : engine_dep)\n"
                        "policies_dep = declare_dependency(link_with : policies_lib, dependencies : engine_dep)\n"
                        "metrics_lib = static_library('kvmetrics', 'x.c', dependencies : [base_dep])\n"
                        "metrics_dep = declare_dependency(link_with : metrics_lib, dependencies : [engine_dep])\n"
                        "datasets_lib = static_library('kvdatasets', 'x.c', dependencies : [engine_dep])\n"),
    }
    want = ['harness/run.c:1:', 'harness/bench.c:1:', 'harness/chain.c:1:', 'policies/weights.c:1:',
            'engine/up.c:1:', 'datasets/chat.c:1:', 'metrics/stats.c:1:', 'metrics/gone.c:1:',
            'kvmetrics (metrics/) depends on engine_dep', 'kvdatasets (datasets/) depends on engine_dep']
    with tempfile.TemporaryDirectory() as tmp:
        for rel, body in files.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)) or tmp, exist_ok=True)
            with open(os.path.join(tmp, rel), 'w', encoding='utf-8') as f:
                f.write(body)
        got, _ = check_includes(tmp)
        got += check_meson(tmp) + check_private(tmp)
    missed = [w for w in want if not any(w in g for g in got)]
    extra = [g for g in got if not any(w in g for w in want)]
    return ['self-test: not reported: %s' % w for w in missed] + ['self-test: wrongly reported: %s' % g for g in extra]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--root', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
    root = ap.parse_args().root
    problems = self_test()
    inc, n = check_includes(root)
    problems += inc + check_meson(root) + check_private(root)
    if n < 100:  # the tree has hundreds; far fewer means the walk went wrong
        problems.append('only %d includes found under %s: wrong --root?' % (n, root))
    for p in problems:
        print(p)
    print('%d includes in %s checked, %d problems' % (n, ', '.join(ALLOWED), len(problems)))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
