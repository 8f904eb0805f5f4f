
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'edgefn' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'edgefn'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'edgefn' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow')
            [CompletionResult]::new('new', 'new', [CompletionResultType]::ParameterValue, 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml')
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Check edgefn.yaml (and the functions'' test cases) and report every problem found')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;init' {
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'Project name (default: the folder''s name)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite files that already exist')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;new' {
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Language runtime of the function')
            [CompletionResult]::new('--runtime', '--runtime', [CompletionResultType]::ParameterName, 'Language runtime of the function')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite the function''s files if they exist')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;validate' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'How to print problems')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;help' {
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow')
            [CompletionResult]::new('new', 'new', [CompletionResultType]::ParameterValue, 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml')
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Check edgefn.yaml (and the functions'' test cases) and report every problem found')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;help;init' {
            break
        }
        'edgefn;help;new' {
            break
        }
        'edgefn;help;validate' {
            break
        }
        'edgefn;help;completions' {
            break
        }
        'edgefn;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
