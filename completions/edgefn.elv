
use builtin;
use str;

set edit:completion:arg-completer[edgefn] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'edgefn'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'edgefn'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand init 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow'
            cand new 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml'
            cand validate 'Check edgefn.yaml (and the functions'' test cases) and report every problem found'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;init'= {
            cand --name 'Project name (default: the folder''s name)'
            cand --force 'Overwrite files that already exist'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;new'= {
            cand -r 'Language runtime of the function'
            cand --runtime 'Language runtime of the function'
            cand -f 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)'
            cand --file 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)'
            cand --force 'Overwrite the function''s files if they exist'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;validate'= {
            cand -f 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --file 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --format 'How to print problems'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;completions'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;help'= {
            cand init 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow'
            cand new 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml'
            cand validate 'Check edgefn.yaml (and the functions'' test cases) and report every problem found'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;help;init'= {
        }
        &'edgefn;help;new'= {
        }
        &'edgefn;help;validate'= {
        }
        &'edgefn;help;completions'= {
        }
        &'edgefn;help;help'= {
        }
    ]
    $completions[$command]
}
