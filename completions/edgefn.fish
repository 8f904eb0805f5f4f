# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_edgefn_global_optspecs
    string join \n h/help V/version
end

function __fish_edgefn_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_edgefn_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_edgefn_using_subcommand
    set -l cmd (__fish_edgefn_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c edgefn -n "__fish_edgefn_needs_command" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_needs_command" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "init" -d 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "new" -d 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "validate" -d 'Check edgefn.yaml (and the functions\' test cases) and report every problem found'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand init" -l name -d 'Project name (default: the folder\'s name)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand init" -l force -d 'Overwrite files that already exist'
complete -c edgefn -n "__fish_edgefn_using_subcommand init" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand init" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -s r -l runtime -d 'Language runtime of the function' -r -f -a "python3\t'Python 3: `handle(event, context)` in main.py'
node\t'Node.js: `exports.handler` in index.js'
exec\t'Any executable that speaks the invocation protocol'"
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -s f -l file -d 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -l force -d 'Overwrite the function\'s files if they exist'
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand validate" -s f -l file -d 'The manifest (default: edgefn.yaml here or in a parent folder)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand validate" -l format -d 'How to print problems' -r -f -a "human\t'Source snippets with labels, for people'
short\t'One `file:line:col: severity[code]: message` line each, for editors and grep'
json\t'A JSON document, for programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand validate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand validate" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand completions" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand completions" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new validate completions help" -f -a "init" -d 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new validate completions help" -f -a "new" -d 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new validate completions help" -f -a "validate" -d 'Check edgefn.yaml (and the functions\' test cases) and report every problem found'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new validate completions help" -f -a "completions" -d 'Print a shell completion script'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new validate completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
