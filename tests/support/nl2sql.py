"""A small company database and its golden question→SQL records, for the finetuning tests.

The same DDL runs on SQLite, PostgreSQL and MySQL/MariaDB; `create(execute)` builds it through any
function that runs one statement. TRAIN has 10 records (the provider's minimum); EVAL holds one
question asked exactly as in training and one whose SQL is not in training.
"""

from __future__ import annotations

from collections.abc import Callable

DDL = [
    "CREATE TABLE departments (id INTEGER NOT NULL, name VARCHAR(50) NOT NULL, "
    "region VARCHAR(20) NOT NULL, PRIMARY KEY (id))",
    "CREATE TABLE employees (id INTEGER NOT NULL, name VARCHAR(80) NOT NULL, "
    "department_id INTEGER NOT NULL, title VARCHAR(30) NOT NULL, salary INTEGER NOT NULL, "
    "PRIMARY KEY (id), FOREIGN KEY (department_id) REFERENCES departments (id))",
    "CREATE TABLE projects (id INTEGER NOT NULL, name VARCHAR(80) NOT NULL, "
    "department_id INTEGER NOT NULL, budget INTEGER NOT NULL, PRIMARY KEY (id), "
    "FOREIGN KEY (department_id) REFERENCES departments (id))",
]
ROWS = [
    "INSERT INTO departments VALUES (1, 'Engineering', 'north'), (2, 'Sales', 'south'), "
    "(3, 'Support', 'north')",
    "INSERT INTO employees VALUES (1, 'Ada', 1, 'engineer', 120), (2, 'Brian', 1, 'manager', 150), "
    "(3, 'Chloe', 2, 'seller', 80), (4, 'Dmitri', 2, 'manager', 110), "
    "(5, 'Esme', 3, 'agent', 60), (6, 'Farid', 1, 'engineer', 125)",
    "INSERT INTO projects VALUES (1, 'Compiler', 1, 500), (2, 'Campaign', 2, 200), "
    "(3, 'Helpdesk', 3, 90)",
]
TABLES = ("projects", "employees", "departments")  # in drop order

TRAIN = [
    ("How many employees are there?", "SELECT COUNT(*) FROM employees"),
    ("List the names of all departments.", "SELECT name FROM departments"),
    ("What is the highest salary?", "SELECT MAX(salary) FROM employees"),
    (
        "Which employees work in Engineering?",
        "SELECT e.name FROM employees e JOIN departments d ON d.id = e.department_id "
        "WHERE d.name = 'Engineering'",
    ),
    ("How many managers are there?", "SELECT COUNT(*) FROM employees WHERE title = 'manager'"),
    ("What is the total project budget?", "SELECT SUM(budget) FROM projects"),
    (
        "Which departments are in the north region?",
        "SELECT name FROM departments WHERE region = 'north'",
    ),
    (
        "List employees by salary, highest first.",
        "SELECT name FROM employees ORDER BY salary DESC",
    ),
    (
        "What is the average salary per department?",
        "SELECT department_id, AVG(salary) FROM employees GROUP BY department_id",
    ),
    ("Which projects cost more than 100?", "SELECT name FROM projects WHERE budget > 100"),
]
EVAL = [
    ("How many employees are there?", "SELECT COUNT(*) FROM employees"),
    ("What is the lowest salary?", "SELECT MIN(salary) FROM employees"),
]


def records(pairs: list[tuple[str, str]], prefix: str) -> list[dict[str, str]]:
    return [
        {"id": f"{prefix}-{index}", "question": question, "sql_query": sql}
        for index, (question, sql) in enumerate(pairs)
    ]


def create(execute: Callable[[str], object]) -> None:
    for statement in [*DDL, *ROWS]:
        execute(statement)
